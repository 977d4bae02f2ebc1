"""A local Hugging Face checkpoint folder, read for import: its config, model and tokenizer.json.

Never touches the hub (HF_HUB_OFFLINE and local_files_only): the folder on disk is the whole input.
Everything the import cannot use is refused with an `ImportRefused` that names the file and the reason,
before any graph is exported.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from tokenizers import Tokenizer


class ImportRefused(ValueError):
    """The checkpoint cannot be served as asked; the message says which file and why."""


def offline() -> None:
    """No download, ever: a missing file is an error, not a fetch."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def read_config(checkpoint: pathlib.Path) -> dict[str, Any]:
    path = checkpoint / "config.json"
    if not checkpoint.is_dir():
        raise ImportRefused(f"{checkpoint}: not a directory (give the folder save_pretrained wrote)")
    if not path.is_file():
        raise ImportRefused(f"{path}: missing; a Hugging Face checkpoint folder has a config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"{path}: not JSON ({exc})") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise ImportRefused(f"{path}: no model_type")
    return config


def read_tokenizer(checkpoint: pathlib.Path, hint: str) -> Tokenizer:
    """The checkpoint's tokenizer.json, which becomes the version's tokenizer (the server reads only that
    format). `hint` says what to do when it is absent."""
    path = checkpoint / "tokenizer.json"
    if not path.is_file():
        raise ImportRefused(f"{path}: missing. {hint}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise ImportRefused(f"{path}: not a `tokenizers` tokenizer.json ({exc})") from exc


def tokenizer_model_type(tokenizer: Tokenizer) -> str:
    """WordPiece, BPE, Unigram or WordLevel."""
    return str(json.loads(tokenizer.to_str())["model"]["type"])


def parameter_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def id2label_names(config: dict[str, Any], config_path: pathlib.Path) -> list[str]:
    """config.id2label in id order (the head's output k is label k), refusing what clients could not use:
    keys that are not 0..n-1, placeholder names (LABEL_0...), empty or repeated names."""
    id2label = config.get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ImportRefused(f"{config_path}: id2label keys must be integers ({exc})") from exc
    if not by_id or sorted(by_id) != list(range(len(by_id))):
        raise ImportRefused(f"{config_path}: id2label must map 0..n-1 to label names, got keys {sorted(by_id)}")
    labels = [by_id[i] for i in range(len(by_id))]
    if all(label.startswith("LABEL_") for label in labels):
        raise ImportRefused(f"{config_path}: id2label holds only placeholder names ({labels[0]}, ...); "
                            "set the real label names in the checkpoint's config")
    if any(not label.strip() for label in labels):
        raise ImportRefused(f"{config_path}: id2label has an empty label name")
    if len(labels) != len(set(labels)):
        raise ImportRefused(f"{config_path}: id2label names a label twice")
    return labels
