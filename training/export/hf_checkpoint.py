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
