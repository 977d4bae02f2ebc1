"""The Transformer as the two graphs of docs/translation-graphs.md: an encoder graph and a decoder-step graph.

    encoder.onnx       src_ids, src_mask -> cross_key_{i}, cross_value_{i}    (memory, one pair per layer)
    decoder_step.onnx  token_ids, src_mask, cross_key_{i}, cross_value_{i}, past_self_key_{i}, past_self_value_{i}
                       -> log_probs, cross_attention, present_self_key_{i}, present_self_value_{i}

The cross-attention keys/values are projected once by the encoder graph (not per step); the
self-attention cache grows by one position per step along its axis 2 ("cache"), which starts at 0.
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch
from torch import nn

from training.export.onnx_export import OPSET, finish_graph
from training.models.transformer import Transformer

# Example sizes for tracing. All distinct and >= 2: torch.export specialises dims of size 0/1 and
# could tie two dims that happen to share an example size.
EXAMPLE_BATCH, EXAMPLE_SOURCE, EXAMPLE_CACHE = 3, 7, 2


def memory_names(layers: int) -> list[str]:
    return [name for i in range(layers) for name in (f"cross_key_{i}", f"cross_value_{i}")]


def state_names(layers: int) -> list[str]:
    return [name for i in range(layers) for name in (f"self_key_{i}", f"self_value_{i}")]


class EncoderGraph(nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory = self.model.encode(src_ids, src_mask)
        return tuple(t for key_value in self.model.cross_attention_cache(memory) for t in key_value)


class DecoderStepGraph(nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.layers = len(model.decoder_layers)

    def forward(
        self, token_ids: torch.Tensor, src_mask: torch.Tensor, *tensors: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        n = self.layers
        cross = [(tensors[2 * i], tensors[2 * i + 1]) for i in range(n)]
        past = [(tensors[2 * n + 2 * i], tensors[2 * n + 2 * i + 1]) for i in range(n)]
        logits, present, weights = self.model.decode_step(token_ids[:, None], cross, src_mask, past)
        # log-softmax inside the graph: beam search sums log-probs, and the graph does it in one fused op.
        return (torch.log_softmax(logits, dim=-1), weights, *(t for kv in present for t in kv))


def export_graphs(model: Transformer, out_dir: pathlib.Path) -> dict[str, Any]:
    """Write encoder.onnx and decoder_step.onnx; return the manifest's `decoding` section (without ids)."""
    model.eval()
    config = model.config
    layers, heads, d_head = len(model.decoder_layers), config.num_heads, config.d_model // config.num_heads
    batch, source, cache = torch.export.Dim("batch"), torch.export.Dim("src_len"), torch.export.Dim("cache")
    memory, states = memory_names(layers), state_names(layers)
    out_dir.mkdir(parents=True, exist_ok=True)

    src_ids = torch.randint(4, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SOURCE))
    src_mask = torch.ones(EXAMPLE_BATCH, EXAMPLE_SOURCE, dtype=torch.long)
    src_mask[0, -2:] = 0
    encoder_axes = {"src_ids": {0: "batch", 1: "src_len"}, "src_mask": {0: "batch", 1: "src_len"},
                    **{name: {0: "batch", 2: "src_len"} for name in memory}}
    with torch.no_grad():
        torch.onnx.export(
            EncoderGraph(model), (src_ids, src_mask), str(out_dir / "encoder.onnx"),
            input_names=["src_ids", "src_mask"], output_names=memory,
            dynamic_shapes={"src_ids": {0: batch, 1: source}, "src_mask": {0: batch, 1: source}},
            opset_version=OPSET, external_data=False, verbose=False,
        )
        cross = EncoderGraph(model)(src_ids, src_mask)
    past = [torch.randn(EXAMPLE_BATCH, heads, EXAMPLE_CACHE, d_head) for _ in states]
    token_ids = torch.randint(4, config.vocab_size, (EXAMPLE_BATCH,))
    step_axes = {"token_ids": {0: "batch"}, "src_mask": {0: "batch", 1: "src_len"},
                 "log_probs": {0: "batch"}, "cross_attention": {0: "batch", 1: "src_len"},
                 **{name: {0: "batch", 2: "src_len"} for name in memory},
                 **{f"past_{name}": {0: "batch", 2: "cache"} for name in states},
                 **{f"present_{name}": {0: "batch", 2: "cache_plus_1"} for name in states}}
    tensor_shapes = [{0: batch, 2: source}] * len(memory) + [{0: batch, 2: cache}] * len(states)
    with torch.no_grad():
        torch.onnx.export(
            DecoderStepGraph(model), (token_ids, src_mask, *cross, *past), str(out_dir / "decoder_step.onnx"),
            input_names=["token_ids", "src_mask", *memory, *(f"past_{n}" for n in states)],
            output_names=["log_probs", "cross_attention", *(f"present_{n}" for n in states)],
            dynamic_shapes={"token_ids": {0: batch}, "src_mask": {0: batch, 1: source},
                            "tensors": tuple(tensor_shapes)},
            opset_version=OPSET, external_data=False, verbose=False,
        )
    encoder_model = finish_graph(out_dir / "encoder.onnx", encoder_axes)
    step_model = finish_graph(out_dir / "decoder_step.onnx", step_axes)
    return {
        "encoder": "encoder.onnx",
        "decoder": "decoder_step.onnx",
        "memory": memory,
        "state": {f"past_{n}": f"present_{n}" for n in states},
        # A zero-length cache: onnxruntime runs the step graph with cache = 0 (tested), so no seeding trick.
        "initial_state": {f"past_{n}": {"zeros": ["batch", heads, 0, d_head]} for n in states},
        "graphs": {"encoder.onnx": encoder_model, "decoder_step.onnx": step_model},
    }
