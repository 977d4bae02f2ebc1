"""Export a trained seq2seq-attention checkpoint as a served model version (docs/translation-graphs.md).

    OMP_NUM_THREADS=1 python -m training.export.translation_seq2seq \
        --checkpoint /work/checkpoints/translation-seq2seq --out exported/seq2seq-attention/1

    encoder.onnx       src_ids, src_mask -> encoder_states, attention_keys (memory),
                                            initial_hidden (+ initial_cell, initial_feed)
    decoder_step.onnx  token_ids, src_mask, encoder_states, attention_keys, past_hidden (+ past_cell, past_feed)
                       -> log_probs, cross_attention, present_hidden (+ present_cell, present_feed)

The decoder state is the RNN's hidden state, batch on axis 0 ([batch, layers, hidden]); its first value
is the bridge's output, an encoder output. `attention_keys` are the encoder states already projected
for the score function (W_a h_s or W_k h_s), computed once per source batch; "dot" attention has no
projection, so its memory is the states alone. Also writes tokenizer.json (the shared joint BPE) and
manifest.json (decoding section, io of both graphs, data/split hashes, training config, learning
curve). Test metrics are added later by the evaluation step.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import onnx
import torch
from torch import nn

from training.decoding_seq2seq import greedy_decode
from training.export.elman_onnx import RNN_TRANSLATIONS, with_exportable_rnns
from training.export.onnx_export import OPSET, finish_graph
from training.export.translation_version import BIBLE, Corpus, export_main, write_version
from training.models.seq2seq_attention import EncoderMemory, Seq2SeqAttention, Seq2SeqConfig

# Example sizes for tracing: distinct and >= 2, since torch.export specialises dims of size 0/1 and
# could tie two dims that happen to share an example size.
EXAMPLE_BATCH, EXAMPLE_SOURCE = 3, 7


def memory_names(config: Seq2SeqConfig) -> list[str]:
    return ["encoder_states"] if config.attention == "dot" else ["encoder_states", "attention_keys"]


def state_names(config: Seq2SeqConfig) -> list[str]:
    """Decoder state tensors in graph order (the model's DecoderState keys)."""
    return ["hidden", *(["cell"] if config.rnn_type == "lstm" else []), *(["feed"] if config.input_feeding else [])]


class EncoderGraph(nn.Module):
    def __init__(self, model: Seq2SeqAttention) -> None:
        super().__init__()
        self.model = model
        self.names = state_names(model.config)
        self.dot = model.config.attention == "dot"

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory, state = self.model.encode(src_ids, src_mask)
        return (*memory[: 1 if self.dot else 2], *(state[name] for name in self.names))


class DecoderStepGraph(nn.Module):
    def __init__(self, model: Seq2SeqAttention) -> None:
        super().__init__()
        self.model = model
        self.names = state_names(model.config)
        self.dot = model.config.attention == "dot"

    def forward(
        self, token_ids: torch.Tensor, src_mask: torch.Tensor, *tensors: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        memory_count = 1 if self.dot else 2
        states = tensors[0]
        memory = EncoderMemory(states, states if self.dot else tensors[1])
        past = dict(zip(self.names, tensors[memory_count:], strict=True))
        log_probs, present, weights = self.model.decode_step(token_ids, src_mask, memory, past)
        return (log_probs, weights, *(present[name] for name in self.names))


def export_graphs(model: Seq2SeqAttention, out_dir: pathlib.Path) -> tuple[dict[str, Any], dict[str, onnx.ModelProto]]:
    """Write encoder.onnx and decoder_step.onnx; return the `decoding` section's graph part and the graphs."""
    model.eval()
    config = model.config
    # Elman cells export through a custom op (training/export/elman_onnx.py); GRU/LSTM models are unchanged.
    traced = with_exportable_rnns(model)
    assert isinstance(traced, Seq2SeqAttention)
    memory, states = memory_names(config), state_names(config)
    batch, source = torch.export.Dim("batch"), torch.export.Dim("src_len")
    out_dir.mkdir(parents=True, exist_ok=True)

    src_ids = torch.randint(4, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SOURCE))
    src_mask = torch.ones(EXAMPLE_BATCH, EXAMPLE_SOURCE, dtype=torch.long)
    src_mask[0, -2:] = 0  # trace with padding present, as served
    sequence_axes = {0: "batch", 1: "src_len"}
    encoder_axes = {"src_ids": sequence_axes, "src_mask": sequence_axes,
                    **{name: sequence_axes for name in memory}, **{f"initial_{name}": {0: "batch"} for name in states}}
    encoder = EncoderGraph(traced)
    with torch.no_grad():
        torch.onnx.export(
            encoder, (src_ids, src_mask), str(out_dir / "encoder.onnx"),
            input_names=["src_ids", "src_mask"], output_names=[*memory, *(f"initial_{n}" for n in states)],
            dynamic_shapes={"src_ids": {0: batch, 1: source}, "src_mask": {0: batch, 1: source}},
            opset_version=OPSET, external_data=False, verbose=False, custom_translation_table=RNN_TRANSLATIONS,
        )
        encoded = encoder(src_ids, src_mask)
    token_ids = torch.randint(4, config.vocab_size, (EXAMPLE_BATCH,))
    step_axes = {"token_ids": {0: "batch"}, "src_mask": sequence_axes, "log_probs": {0: "batch"},
                 "cross_attention": sequence_axes, **{name: sequence_axes for name in memory},
                 **{f"{prefix}_{name}": {0: "batch"} for name in states for prefix in ("past", "present")}}
    tensor_shapes = [{0: batch, 1: source}] * len(memory) + [{0: batch}] * len(states)
    with torch.no_grad():
        torch.onnx.export(
            DecoderStepGraph(traced), (token_ids, src_mask, *encoded), str(out_dir / "decoder_step.onnx"),
            input_names=["token_ids", "src_mask", *memory, *(f"past_{n}" for n in states)],
            output_names=["log_probs", "cross_attention", *(f"present_{n}" for n in states)],
            dynamic_shapes={"token_ids": {0: batch}, "src_mask": {0: batch, 1: source},
                            "tensors": tuple(tensor_shapes)},
            opset_version=OPSET, external_data=False, verbose=False, custom_translation_table=RNN_TRANSLATIONS,
        )
    graphs = {"encoder.onnx": finish_graph(out_dir / "encoder.onnx", encoder_axes),
              "decoder_step.onnx": finish_graph(out_dir / "decoder_step.onnx", step_axes)}
    decoding = {
        "encoder": "encoder.onnx",
        "decoder": "decoder_step.onnx",
        "memory": memory,
        "state": {f"past_{n}": f"present_{n}" for n in states},
        # Every initial state (the bridge's hidden/cell, the zero input-feeding vector) is an encoder output.
        "initial_state": {f"past_{n}": {"encoder_output": f"initial_{n}"} for n in states},
    }
    return decoding, graphs


def load_checkpoint(checkpoint_dir: pathlib.Path) -> tuple[Seq2SeqAttention, dict[str, Any]]:
    """The best model (eval mode) and the checkpoint's metrics (dev scores at the step it was saved)."""
    config = Seq2SeqConfig(**json.loads((checkpoint_dir / "model_config.json").read_text()))
    state = torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=False)
    model = Seq2SeqAttention(config)
    model.load_state_dict(state["model"])
    return model.eval(), dict(state.get("metrics") or {})


def describe(model: Seq2SeqAttention, corpus: Corpus = BIBLE) -> str:
    config = model.config
    directions = f"bidirectional {config.rnn_type.upper()} {config.encoder_layers}x(2x{config.encoder_hidden})"
    span = (f"local-p (window +-{config.local_window} source tokens) {config.attention}"
            if config.attention_span == "local-p" else config.attention)
    return (f"RNN encoder-decoder with {span} attention: {directions} encoder, "
            f"{config.rnn_type.upper()} {config.decoder_layers}x{config.decoder_hidden} decoder"
            f"{' with input feeding' if config.input_feeding else ''}, embeddings {config.embedding_dim} "
            f"(joint {config.vocab_size} BPE{' shared with the transformer' if corpus == BIBLE else ''}), "
            f"{sum(p.numel() for p in model.parameters()):,} parameters; {corpus.summary}.")


def export_version(checkpoint_dir: pathlib.Path, out_dir: pathlib.Path, name: str = "seq2seq-attention",
                   corpus: Corpus = BIBLE, default_for_task: bool = False) -> dict[str, Any]:
    model, best_metrics = load_checkpoint(checkpoint_dir)
    # The Transformer is the default translation model.
    return write_version(model, best_metrics, checkpoint_dir, out_dir, name=name,
                         description=describe(model, corpus), default_for_task=default_for_task,
                         export_graphs=export_graphs, greedy_decode=greedy_decode, corpus=corpus)


def main() -> None:
    export_main(export_version, "seq2seq-attention", __doc__)


if __name__ == "__main__":
    main()
