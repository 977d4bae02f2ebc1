"""A Hugging Face Marian or BART model as the two graphs of docs/translation-graphs.md.

    encoder.onnx       src_ids, src_mask -> cross_key_{i}, cross_value_{i}   (memory: one pair per decoder layer)
    decoder_step.onnx  token_ids, src_mask, cross_key_{i}, cross_value_{i}, past_self_key_{i}, past_self_value_{i}
                       -> log_probs, cross_attention, present_self_key_{i}, present_self_value_{i}

The forward is written here over the checkpoint's own weights (the HF modules' Linear and LayerNorm
layers are called, their attention code is not): HF's attention goes through its cache objects and
mask helpers, which do not export as a step graph with the cache as an input. Both are post-LN
encoder-decoders with logits + final_logits_bias and embeddings scaled by sqrt(d) when
config.scale_embedding (Marian scales in the stack, BART inside its embedding module); they differ in
positions (Marian: a fixed sinusoid table read from row 0; BART: a learned table read from row 2, its
`offset`) and in BART's `layernorm_embedding` after the positions are added. The export parity check
compares the result with the HF model itself, so a difference cannot go unnoticed. Masks are finite
additive biases (-1e4), as in our own Transformer.

Tokens the checkpoint's generation config never lets `generate` emit (single-token bad_words_ids,
suppress_tokens; opus-mt models forbid their pad token, which is also the decoder start) get
SUPPRESSED_BIAS added to their logit inside the step graph, so greedy and beam search skip them too.
A `forced_bos_token_id` (BART checkpoints such as bart-large set it: the first token after the decoder
start is always <s>) is applied the same way, on the first step only (the cache is empty): every other
token gets SUPPRESSED_BIAS there, so the searches emit it as `generate`'s logits processor makes it do.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from training.export.onnx_export import OPSET, finish_graph
from training.export.translation_graphs import EXAMPLE_BATCH, EXAMPLE_CACHE, EXAMPLE_SOURCE, memory_names, state_names

MASK_BIAS = -1e4
SUPPRESSED_BIAS = -1e4
# A Hugging Face module: its submodules are attributes built from the config (q_proj, layers...), which
# the type checker cannot see through nn.Module; the export parity check is what pins their use down.
HFModule = Any


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, time, d] -> [batch, heads, time, d_head]."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[batch, heads, time, d_head] -> [batch, time, d]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def _attend(attention: HFModule, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
            bias: torch.Tensor | None, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's eager attention: softmax(q k^T * head_dim^-0.5 + bias) v, then out_proj; also the weights."""
    scores = torch.matmul(_heads(attention.q_proj(query), heads), key.transpose(2, 3)) * attention.scaling
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores, dim=-1)
    return attention.out_proj(_merge(torch.matmul(weights, value))), weights


def _project(linear: HFModule, states: torch.Tensor, heads: int) -> torch.Tensor:
    return _heads(linear(states), heads)


def _source_bias(src_mask: torch.Tensor) -> torch.Tensor:
    return (1.0 - src_mask[:, None, None, :].to(torch.float32)) * MASK_BIAS


def forced_first_bias(vocab_size: int, token: int) -> torch.Tensor:
    """What the first step adds to the logits to force `token`: SUPPRESSED_BIAS on every other token."""
    bias = torch.full((vocab_size,), SUPPRESSED_BIAS)
    bias[token] = 0.0
    return bias


def _embed(stack: HFModule, ids: torch.Tensor, start: int | torch.SymInt, length: int | torch.SymInt
           ) -> torch.Tensor:
    """Token embeddings + positions start..start+length-1 (+ BART's layernorm_embedding), as the HF stack
    computes them. BART's embedding module scales itself (BartScaledWordEmbedding has embed_scale);
    Marian's stack does. A learned BART table keeps rows 0 and 1 unused (`offset` 2)."""
    tokens = stack.embed_tokens(ids)
    if not hasattr(stack.embed_tokens, "embed_scale"):
        tokens = tokens * stack.embed_scale
    offset = getattr(stack.embed_positions, "offset", 0)
    hidden = tokens + stack.embed_positions.weight.narrow(0, start + offset, length)[None]
    norm = getattr(stack, "layernorm_embedding", None)
    return hidden if norm is None else norm(hidden)


# Both graphs hold the whole HF model under the same attribute, so a weight has the same initializer
# name in both (the tied token embedding) and share_initializers stores it once.
class Seq2SeqEncoderGraph(nn.Module):
    def __init__(self, model: HFModule) -> None:
        super().__init__()
        self.model: HFModule = model
        self.heads = model.config.encoder_attention_heads
        self.decoder_heads = model.config.decoder_attention_heads

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoder = self.model.model.encoder
        hidden = _embed(encoder, src_ids, 0, src_ids.shape[1])
        bias = _source_bias(src_mask)
        for layer in encoder.layers:
            keys = _project(layer.self_attn.k_proj, hidden, self.heads)
            values = _project(layer.self_attn.v_proj, hidden, self.heads)
            attended, _ = _attend(layer.self_attn, hidden, keys, values, bias, self.heads)
            hidden = layer.self_attn_layer_norm(hidden + attended)
            hidden = layer.final_layer_norm(hidden + layer.fc2(layer.activation_fn(layer.fc1(hidden))))
        return tuple(_project(projection, hidden, self.decoder_heads)
                     for layer in self.model.model.decoder.layers
                     for projection in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj))


class Seq2SeqDecoderStepGraph(nn.Module):
    forced_first: torch.Tensor | None

    def __init__(self, model: HFModule, suppressed: Sequence[int], forced_first: int | None = None) -> None:
        super().__init__()
        self.model: HFModule = model
        self.heads = model.config.decoder_attention_heads
        bias = model.final_logits_bias.detach().clone().reshape(-1)
        bias[list(suppressed)] += SUPPRESSED_BIAS
        self.register_buffer("logit_bias", bias)
        self.register_buffer("forced_first",
                             None if forced_first is None else forced_first_bias(bias.shape[0], forced_first))

    def forward(self, token_ids: torch.Tensor, src_mask: torch.Tensor, *tensors: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        decoder = self.model.model.decoder
        layers = len(decoder.layers)
        past_length = tensors[2 * layers].shape[2]  # the step's position is the cache length
        hidden = _embed(decoder, token_ids[:, None], past_length, 1)
        bias = _source_bias(src_mask)
        present, weights = [], None
        for i, layer in enumerate(decoder.layers):
            keys = torch.cat([tensors[2 * layers + 2 * i], _project(layer.self_attn.k_proj, hidden, self.heads)], 2)
            values = torch.cat([tensors[2 * layers + 2 * i + 1], _project(layer.self_attn.v_proj, hidden, self.heads)],
                               2)
            present += [keys, values]
            attended, _ = _attend(layer.self_attn, hidden, keys, values, None, self.heads)  # no future to mask
            hidden = layer.self_attn_layer_norm(hidden + attended)
            attended, weights = _attend(layer.encoder_attn, hidden, tensors[2 * i], tensors[2 * i + 1], bias,
                                        self.heads)
            hidden = layer.encoder_attn_layer_norm(hidden + attended)
            hidden = layer.final_layer_norm(hidden + layer.fc2(layer.activation_fn(layer.fc1(hidden))))
        logits = self.model.lm_head(hidden[:, 0]) + self.logit_bias
        if self.forced_first is not None:
            # 1 on the first step, else 0, computed from the cache tensor itself (its length is a dynamic
            # dimension: a Python comparison on it would fix the graph to one branch at export).
            first = (torch.ones_like(tensors[2 * layers][0, 0, :, 0]).sum() == 0).to(logits.dtype)
            logits = logits + first * self.forced_first
        assert weights is not None
        # As our Transformer: the last layer's cross-attention, averaged over heads.
        return (torch.log_softmax(logits, dim=-1), weights[:, :, 0].mean(dim=1), *present)


def export_hf_seq2seq_graphs(model: HFModule, out_dir: pathlib.Path, suppressed: Sequence[int],
                             forced_first: int | None = None) -> dict[str, Any]:
    """Write encoder.onnx and decoder_step.onnx; return the decoding section's graph part and the graphs.
    `forced_first`: the token the first step must emit (generation's forced_bos_token_id), or None."""
    model.eval()
    config = model.config
    layers, heads = config.decoder_layers, config.decoder_attention_heads
    d_head = config.d_model // heads
    batch, source, cache = torch.export.Dim("batch"), torch.export.Dim("src_len"), torch.export.Dim("cache")
    memory, states = memory_names(layers), state_names(layers)
    encoder_graph = Seq2SeqEncoderGraph(model).eval()
    step_graph = Seq2SeqDecoderStepGraph(model, suppressed, forced_first).eval()
    generator = torch.Generator().manual_seed(0)
    src_ids = torch.randint(0, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SOURCE), generator=generator)
    src_mask = torch.ones(EXAMPLE_BATCH, EXAMPLE_SOURCE, dtype=torch.long)
    src_mask[0, -2:] = 0
    with torch.no_grad():
        torch.onnx.export(
            encoder_graph, (src_ids, src_mask), str(out_dir / "encoder.onnx"),
            input_names=["src_ids", "src_mask"], output_names=memory,
            dynamic_shapes={"src_ids": {0: batch, 1: source}, "src_mask": {0: batch, 1: source}},
            opset_version=OPSET, external_data=False, verbose=False,
        )
        cross = encoder_graph(src_ids, src_mask)
        past = [torch.randn(EXAMPLE_BATCH, heads, EXAMPLE_CACHE, d_head, generator=generator) for _ in states]
        token_ids = torch.randint(0, config.vocab_size, (EXAMPLE_BATCH,), generator=generator)
        tensor_shapes = [{0: batch, 2: source}] * len(memory) + [{0: batch, 2: cache}] * len(states)
        torch.onnx.export(
            step_graph, (token_ids, src_mask, *cross, *past), str(out_dir / "decoder_step.onnx"),
            input_names=["token_ids", "src_mask", *memory, *(f"past_{n}" for n in states)],
            output_names=["log_probs", "cross_attention", *(f"present_{n}" for n in states)],
            dynamic_shapes={"token_ids": {0: batch}, "src_mask": {0: batch, 1: source},
                            "tensors": tuple(tensor_shapes)},
            opset_version=OPSET, external_data=False, verbose=False,
        )
    encoder_axes = {"src_ids": {0: "batch", 1: "src_len"}, "src_mask": {0: "batch", 1: "src_len"},
                    **{name: {0: "batch", 2: "src_len"} for name in memory}}
    step_axes = {"token_ids": {0: "batch"}, "src_mask": {0: "batch", 1: "src_len"},
                 "log_probs": {0: "batch"}, "cross_attention": {0: "batch", 1: "src_len"},
                 **{name: {0: "batch", 2: "src_len"} for name in memory},
                 **{f"past_{name}": {0: "batch", 2: "cache"} for name in states},
                 **{f"present_{name}": {0: "batch", 2: "cache_plus_1"} for name in states}}
    return {
        "encoder": "encoder.onnx",
        "decoder": "decoder_step.onnx",
        "memory": memory,
        "state": {f"past_{n}": f"present_{n}" for n in states},
        "initial_state": {f"past_{n}": {"zeros": ["batch", heads, 0, d_head]} for n in states},
        "graphs": {"encoder.onnx": finish_graph(out_dir / "encoder.onnx", encoder_axes),
                   "decoder_step.onnx": finish_graph(out_dir / "decoder_step.onnx", step_axes)},
    }
