"""Export a trained translation Transformer checkpoint as a served model version.

    OMP_NUM_THREADS=1 python -m training.export.translation_transformer \
        --checkpoint /work/checkpoints/translation-transformer --out exported/transformer/1

Writes encoder.onnx + decoder_step.onnx (docs/translation-graphs.md), tokenizer.json and manifest.json
(decoding section, onnx io of both graphs, data/split hashes, training config, learning curve). Test
metrics are added later by `python -m training.evaluate.translation ... --write-manifest`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import onnx
import torch

from training.decoding import greedy_decode
from training.export.translation_graphs import export_graphs
from training.export.translation_version import BIBLE, Corpus, export_main, write_version
from training.models.transformer import Transformer, TransformerConfig


def load_checkpoint(checkpoint_dir: pathlib.Path) -> tuple[Transformer, dict[str, Any]]:
    """The best model (eval mode) and the checkpoint's metrics (dev scores at the step it was saved)."""
    config = TransformerConfig(**json.loads((checkpoint_dir / "model_config.json").read_text()))
    state = torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=False)
    model = Transformer(config)
    model.load_state_dict(state["model"])
    return model.eval(), dict(state.get("metrics") or {})


def two_graphs(model: Transformer, out_dir: pathlib.Path) -> tuple[dict[str, Any], dict[str, onnx.ModelProto]]:
    exported = export_graphs(model, out_dir)
    return {k: v for k, v in exported.items() if k != "graphs"}, exported["graphs"]


def describe(model: Transformer, corpus: Corpus = BIBLE) -> str:
    config = model.config
    return (f"Pre-LN Transformer encoder-decoder, {config.encoder_layers}+{config.decoder_layers} "
            f"layers, d{config.d_model}, joint {config.vocab_size} BPE, "
            f"{sum(p.numel() for p in model.parameters()):,} parameters; {corpus.summary}.")


def export_version(checkpoint_dir: pathlib.Path, out_dir: pathlib.Path, name: str = "transformer",
                   corpus: Corpus = BIBLE, default_for_task: bool = True) -> dict[str, Any]:
    model, best_metrics = load_checkpoint(checkpoint_dir)
    return write_version(model, best_metrics, checkpoint_dir, out_dir, name=name,
                         description=describe(model, corpus), default_for_task=default_for_task,
                         export_graphs=two_graphs, greedy_decode=greedy_decode, corpus=corpus)


def main() -> None:
    export_main(export_version, "transformer", __doc__)


if __name__ == "__main__":
    main()
