"""Export a trained ConvS2S checkpoint as a served model version (docs/translation-graphs.md).

    OMP_NUM_THREADS=1 python -m training.export.translation_convs2s \
        --checkpoint /work/checkpoints/translation-convs2s --out exported/convs2s/1

    encoder.onnx       src_ids, src_mask -> attention_keys (z), attention_values (z + e)   (memory)
    decoder_step.onnx  token_ids, src_mask, attention_keys, attention_values, past_position, past_conv_{i}
                       -> log_probs, cross_attention, present_position, present_conv_{i}

The decoder state is, per decoder layer, the last (kernel - 1) inputs of its causal convolution
([batch, kernel - 1, channels], zeros at the start: the full pass's left padding) and the step's position
([batch, 1] float, 0 at the start, +1 per step): a fixed-size cache cannot say where the step is by its
length, as the Transformer's does. `cross_attention` is the multi-step attention averaged over the
decoder layers (fairseq's alignment). Every initial state is zeros, so the encoder graph outputs memory only.

The weights are stored as float16 and computed in float32 (training/export/half_storage.py): float32
files would take ~22 MB of exported/'s budget. They are rounded in torch before the export, so the
parity recorded in the manifest is measured against the served weights; the rounding's effect on the dev
verses is recorded beside it (`export_parity.float16_rounding`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import onnx
import sacrebleu
import torch
from tokenizers import Tokenizer
from torch import nn

from service.model.manifest import write_manifest
from training.data.translation import load_splits
from training.decoding_seq2seq import greedy_decode, translate
from training.export.half_storage import round_weights_to_half, store_half
from training.export.onnx_export import OPSET, finish_graph
from training.export.translation_version import BIBLE, Corpus, export_main, json_file, write_version
from training.models.convs2s import ConvS2S, ConvS2SConfig, EncoderMemory
from training.translation_run import dev_subset

# Example sizes for tracing: distinct and >= 2, since torch.export specialises dims of size 0/1 and
# could tie two dims that happen to share an example size.
EXAMPLE_BATCH, EXAMPLE_SOURCE = 3, 7
MEMORY = ["attention_keys", "attention_values"]


def state_names(config: ConvS2SConfig) -> list[str]:
    """Decoder state tensors in graph order (the model's DecoderState keys)."""
    return ["position", *(f"conv_{i}" for i in range(config.decoder_layers))]


class EncoderGraph(nn.Module):
    def __init__(self, model: ConvS2S) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory, _ = self.model.encode(src_ids, src_mask)
        return memory.keys, memory.values


class DecoderStepGraph(nn.Module):
    def __init__(self, model: ConvS2S) -> None:
        super().__init__()
        self.model = model
        self.names = state_names(model.config)

    def forward(
        self, token_ids: torch.Tensor, src_mask: torch.Tensor, *tensors: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        memory = EncoderMemory(keys=tensors[0], values=tensors[1])
        past = dict(zip(self.names, tensors[2:], strict=True))
        log_probs, present, weights = self.model.decode_step(token_ids, src_mask, memory, past)
        return (log_probs, weights, *(present[name] for name in self.names))


def export_graphs(model: ConvS2S, out_dir: pathlib.Path) -> tuple[dict[str, Any], dict[str, onnx.ModelProto]]:
    """Write encoder.onnx and decoder_step.onnx (weights stored as float16); return the `decoding`
    section's graph part and the graphs."""
    model.eval()
    config = model.config
    states = state_names(config)
    batch, source = torch.export.Dim("batch"), torch.export.Dim("src_len")
    out_dir.mkdir(parents=True, exist_ok=True)

    src_ids = torch.randint(4, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SOURCE))
    src_mask = torch.ones(EXAMPLE_BATCH, EXAMPLE_SOURCE, dtype=torch.long)
    src_mask[0, -2:] = 0  # trace with padding present, as served
    sequence_axes = {0: "batch", 1: "src_len"}
    encoder_axes = {"src_ids": sequence_axes, "src_mask": sequence_axes, **{name: sequence_axes for name in MEMORY}}
    encoder = EncoderGraph(model)
    with torch.no_grad():
        torch.onnx.export(
            encoder, (src_ids, src_mask), str(out_dir / "encoder.onnx"),
            input_names=["src_ids", "src_mask"], output_names=MEMORY,
            dynamic_shapes={"src_ids": {0: batch, 1: source}, "src_mask": {0: batch, 1: source}},
            opset_version=OPSET, external_data=False, verbose=False,
        )
        memory, state = model.encode(src_ids, src_mask)
    # A state a few steps in (position 2, non-zero caches), so nothing is traced as a constant zero.
    past = {name: torch.randn_like(value) for name, value in state.items()}
    past["position"] = torch.full_like(state["position"], 2.0)
    token_ids = torch.randint(4, config.vocab_size, (EXAMPLE_BATCH,))
    step_axes = {"token_ids": {0: "batch"}, "src_mask": sequence_axes, "log_probs": {0: "batch"},
                 "cross_attention": sequence_axes, **{name: sequence_axes for name in MEMORY},
                 **{f"{prefix}_{name}": {0: "batch"} for name in states for prefix in ("past", "present")}}
    tensor_shapes = [{0: batch, 1: source}] * len(MEMORY) + [{0: batch}] * len(states)
    with torch.no_grad():
        torch.onnx.export(
            DecoderStepGraph(model), (token_ids, src_mask, *memory, *(past[n] for n in states)),
            str(out_dir / "decoder_step.onnx"),
            input_names=["token_ids", "src_mask", *MEMORY, *(f"past_{n}" for n in states)],
            output_names=["log_probs", "cross_attention", *(f"present_{n}" for n in states)],
            dynamic_shapes={"token_ids": {0: batch}, "src_mask": {0: batch, 1: source},
                            "tensors": tuple(tensor_shapes)},
            opset_version=OPSET, external_data=False, verbose=False,
        )
    graphs = {}
    for file, axes in (("encoder.onnx", encoder_axes), ("decoder_step.onnx", step_axes)):
        finish_graph(out_dir / file, axes)
        store_half(out_dir / file)
        graphs[file] = onnx.load(str(out_dir / file))
    kernel_inputs = config.decoder_kernel - 1
    decoding = {
        "encoder": "encoder.onnx",
        "decoder": "decoder_step.onnx",
        "memory": MEMORY,
        "state": {f"past_{n}": f"present_{n}" for n in states},
        "initial_state": {"past_position": {"zeros": ["batch", 1]},
                          **{f"past_{n}": {"zeros": ["batch", kernel_inputs, config.channels]} for n in states[1:]}},
    }
    return decoding, graphs


def load_checkpoint(checkpoint_dir: pathlib.Path) -> tuple[ConvS2S, dict[str, Any]]:
    """The best model (eval mode) and the checkpoint's metrics (dev scores at the step it was saved)."""
    config = ConvS2SConfig(**json.loads((checkpoint_dir / "model_config.json").read_text()))
    state = torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=False)
    model = ConvS2S(config)
    model.load_state_dict(state["model"])
    return model.eval(), dict(state.get("metrics") or {})


def dev_scores(model: ConvS2S, checkpoint_dir: pathlib.Path, size: int) -> dict[str, float]:
    """Greedy dev chrF/BLEU in torch on the training run's fixed dev subset (what best.pt was chosen on)."""
    training = json.loads((checkpoint_dir / "training_config.json").read_text())
    parts, _ = load_splits(training["max_words_train"])
    dev = dev_subset(parts["dev"], size)
    tokenizer = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    hypotheses = translate(model, tokenizer, [p.source for p in dev], 50)
    references = [[p.target for p in dev]]
    return {"chrf": round(sacrebleu.corpus_chrf(hypotheses, references).score, 2),
            "bleu": round(sacrebleu.corpus_bleu(hypotheses, references).score, 2)}


def describe(model: ConvS2S, corpus: Corpus = BIBLE) -> str:
    config = model.config
    return (f"ConvS2S (Gehring et al. 2017): encoder {config.encoder_layers} x ({config.channels}, kernel "
            f"{config.encoder_kernel}), decoder {config.decoder_layers} x ({config.channels}, kernel "
            f"{config.decoder_kernel}) with multi-step attention, GLU, embeddings {config.embedding_dim} "
            f"(joint {config.vocab_size} BPE{' shared with the transformer' if corpus == BIBLE else ''}), "
            f"{sum(p.numel() for p in model.parameters()):,} parameters stored as float16; {corpus.summary}.")


def export_version(checkpoint_dir: pathlib.Path, out_dir: pathlib.Path, name: str = "convs2s",
                   corpus: Corpus = BIBLE, default_for_task: bool = False) -> dict[str, Any]:
    model, best_metrics = load_checkpoint(checkpoint_dir)
    # A run of training/translation_run.py records its dev subset; a checkpoint without one (tests) skips the check.
    dev_size = int(json_file(checkpoint_dir / "training_config.json", {}).get("dev_subset", 0))
    before = dev_scores(model, checkpoint_dir, dev_size) if dev_size else None
    rounding: dict[str, Any] = {"largest_weight_change": round_weights_to_half(model)}
    if dev_size:
        rounding.update({"dev_verses": dev_size, "dev_greedy_torch_float32": before,
                         "dev_greedy_torch_float16_weights": dev_scores(model, checkpoint_dir, dev_size)})
    manifest = write_version(model, best_metrics, checkpoint_dir, out_dir, name=name,
                             description=describe(model, corpus), default_for_task=default_for_task,
                             export_graphs=export_graphs, greedy_decode=greedy_decode, corpus=corpus)
    manifest["export_parity"]["float16_rounding"] = rounding
    write_manifest(out_dir, manifest)
    return manifest


def main() -> None:
    export_main(export_version, "convs2s", __doc__)


if __name__ == "__main__":
    main()
