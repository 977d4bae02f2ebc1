"""Transformer encoder-decoder for translation (Vaswani et al. 2017, as in the Annotated Transformer),
pre-LayerNorm, with one embedding matrix shared by source, target and output projection (joint BPE).

    source ids -> embed * sqrt(d) + sinusoid -> N x EncoderLayer -> LayerNorm = memory
    target ids -> embed * sqrt(d) + sinusoid -> N x DecoderLayer(self-attn, cross-attn on memory, FFN)
               -> LayerNorm -> embedding^T = logits

Two ways to run the decoder, which compute the same numbers:
- `forward`: teacher forcing over the whole target at once (training), causal mask inside;
- `encode` once, `cross_attention_cache` once (the cross-attention keys/values of the memory, per
  layer), then `decode_step` per token with an explicit self-attention cache: it takes `past`
  (per layer: keys, values [B, heads, T_past, d_head]) and returns `present` (T_past + 1). The step's
  position is the cache length, so a step graph needs no extra position input. This is the contract
  the ONNX decoder-step graph exports.

Masks are 0/1 padding masks from `pad_batch` ([B, T], 1 = real token); inside they become finite
additive biases (training/models/layers.py: MASKED_SCORE, never -inf or booleans).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from training.models.layers import MASKED_SCORE, additive_mask

KeyValue = tuple[torch.Tensor, torch.Tensor]  # keys, values: [B, heads, T, d_head]


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    d_model: int = 256
    num_heads: int = 4
    d_ff: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1
    max_positions: int = 1024  # longest source or target the sinusoid table covers
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3


def padding_bias(mask: torch.Tensor) -> torch.Tensor:
    """0/1 mask [B, S] -> additive bias [B, 1, 1, S] (0 for real tokens, MASKED_SCORE for padding)."""
    return additive_mask(mask[:, None, None, :])


def causal_bias(length: int, device: torch.device | None = None) -> torch.Tensor:
    """[1, 1, T, T]: position t may attend to positions <= t."""
    full = torch.full((length, length), MASKED_SCORE, device=device)
    return torch.triu(full, diagonal=1)[None, None]


def sinusoid_table(max_positions: int, d_model: int) -> torch.Tensor:
    """[max_positions, d_model], sin on even and cos on odd dimensions (Vaswani et al. 3.5).

    Computed in float64 and rounded once to float32: float32 sin/cos of arguments up to max_positions
    differ between CPUs and math libraries by up to 3e-5 (AVX-512 Xeon vs EPYC), float64 ones round to
    the same float32 everywhere.
    """
    position = torch.arange(max_positions, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.to(torch.float32)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over `num_heads` subspaces; returns the head-averaged weights too
    (the cross-attention ones become the alignment a client can ask for)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        assert d_model % num_heads == 0, "d_model must divide into heads"
        self.num_heads, self.d_head = num_heads, d_model // num_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.output = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.d_head).transpose(1, 2)

    def project_key_value(self, x: torch.Tensor) -> KeyValue:
        """[B, T, d_model] -> keys, values [B, heads, T, d_head]."""
        return self.split_heads(self.key(x)), self.split_heads(self.value(x))

    def attend(self, x: torch.Tensor, key_value: KeyValue, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries from x [B, Tq, d_model] over given keys/values; bias broadcasts to [B, heads, Tq, Tk]."""
        keys, values = key_value
        queries = self.split_heads(self.query(x))
        scores = queries @ keys.transpose(-2, -1) / math.sqrt(self.d_head) + bias
        weights = torch.softmax(scores, dim=-1)
        context = self.dropout(weights) @ values  # [B, heads, Tq, d_head]
        batch, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.d_head)
        return self.output(context), weights.mean(dim=1)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.expand = nn.Linear(d_model, d_ff)
        self.contract = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.contract(self.dropout(torch.relu(self.expand(x))))


class SinusoidalPositions(nn.Module):
    """Adds the fixed sinusoid of each position, starting at `start` (the cache length when stepping)."""

    table: torch.Tensor  # a buffer, registered in __init__ (declared for the type checker)

    def __init__(self, d_model: int, max_positions: int) -> None:
        super().__init__()
        # Not persistent: derived from the config, so it stays out of checkpoints.
        self.register_buffer("table", sinusoid_table(max_positions, d_model), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x + self.table[start : start + x.shape[1]]


class EncoderLayer(nn.Module):
    """Pre-LN: x + SelfAttention(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.self_attention_norm = nn.LayerNorm(config.d_model)
        self.self_attention = MultiHeadAttention(config.d_model, config.num_heads, config.dropout)
        self.feed_forward_norm = nn.LayerNorm(config.d_model)
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        normed = self.self_attention_norm(x)
        attended, _ = self.self_attention.attend(normed, self.self_attention.project_key_value(normed), bias)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class DecoderLayer(nn.Module):
    """Pre-LN: masked self-attention, cross-attention over the memory, FFN, each with a residual.

    `past` (keys/values of earlier target positions) is extended with this call's positions and
    returned as `present`; `cross` holds the memory's keys/values, computed once per source batch.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.self_attention_norm = nn.LayerNorm(config.d_model)
        self.self_attention = MultiHeadAttention(config.d_model, config.num_heads, config.dropout)
        self.cross_attention_norm = nn.LayerNorm(config.d_model)
        self.cross_attention = MultiHeadAttention(config.d_model, config.num_heads, config.dropout)
        self.feed_forward_norm = nn.LayerNorm(config.d_model)
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, self_bias: torch.Tensor, past: KeyValue | None, cross: KeyValue,
        cross_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, KeyValue, torch.Tensor]:
        normed = self.self_attention_norm(x)
        keys, values = self.self_attention.project_key_value(normed)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        attended, _ = self.self_attention.attend(normed, (keys, values), self_bias)
        x = x + self.dropout(attended)
        attended, cross_weights = self.cross_attention.attend(self.cross_attention_norm(x), cross, cross_bias)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        return x, (keys, values), cross_weights


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        # Tied input/output matrix: N(0, d^-1/2) keeps logits O(1); inputs are scaled back up by sqrt(d).
        nn.init.normal_(self.embedding.weight, std=config.d_model**-0.5)
        self.positions = SinusoidalPositions(config.d_model, config.max_positions)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.encoder_norm = nn.LayerNorm(config.d_model)
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.decoder_norm = nn.LayerNorm(config.d_model)

    def embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        x = self.embedding(ids) * math.sqrt(self.config.d_model)
        return self.embedding_dropout(self.positions(x, start))

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Source ids and 0/1 mask [B, S] -> memory [B, S, d_model]."""
        x, bias = self.embed(src_ids), padding_bias(src_mask)
        for layer in self.encoder_layers:
            x = layer(x, bias)
        return self.encoder_norm(x)

    def cross_attention_cache(self, memory: torch.Tensor) -> list[KeyValue]:
        """Per decoder layer, the memory's cross-attention keys/values: computed once, reused every step."""
        # cast: a ModuleList yields plain Modules to the type checker; these are the DecoderLayers built above.
        return [cast(DecoderLayer, layer).cross_attention.project_key_value(memory) for layer in self.decoder_layers]

    def empty_cache(self, batch: int) -> list[KeyValue]:
        """The `past` of the first step: zero cached positions."""
        shape = (batch, self.config.num_heads, 0, self.config.d_model // self.config.num_heads)
        device = self.embedding.weight.device
        return [(torch.zeros(shape, device=device), torch.zeros(shape, device=device)) for _ in self.decoder_layers]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_norm(x) @ self.embedding.weight.t()

    def decode(
        self, tgt_ids: torch.Tensor, self_bias: torch.Tensor, cross: list[KeyValue], src_mask: torch.Tensor,
        past: list[KeyValue] | None,
    ) -> tuple[torch.Tensor, list[KeyValue], torch.Tensor]:
        """Target positions after `past` -> (logits [B, T, V], present, last layer's cross weights [B, T, S])."""
        start = 0 if past is None else past[0][0].shape[2]
        x, cross_bias = self.embed(tgt_ids, start), padding_bias(src_mask)
        present, cross_weights = [], torch.empty(0, device=tgt_ids.device)
        for index, layer in enumerate(self.decoder_layers):
            x, layer_present, cross_weights = layer(x, self_bias, None if past is None else past[index],
                                                    cross[index], cross_bias)
            present.append(layer_present)
        return self.project(x), present, cross_weights

    def forward(
        self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt_in_ids: torch.Tensor, tgt_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] for every target position at once."""
        memory = self.encode(src_ids, src_mask)
        self_bias = causal_bias(tgt_in_ids.shape[1], tgt_in_ids.device) + padding_bias(tgt_mask)
        logits, _, _ = self.decode(tgt_in_ids, self_bias, self.cross_attention_cache(memory), src_mask, None)
        return logits

    def decode_step(
        self, token_ids: torch.Tensor, cross: list[KeyValue], src_mask: torch.Tensor, past: list[KeyValue],
    ) -> tuple[torch.Tensor, list[KeyValue], torch.Tensor]:
        """One target position for each row: token_ids [B, 1] -> (logits [B, V], present, cross weights [B, S]).

        No causal mask is needed: the single new query may see every cached position. Rows step in
        lockstep, so a finished row keeps feeding (ignored) tokens instead of changing the cache shape.
        """
        no_bias = torch.zeros(1, 1, 1, 1, device=token_ids.device)
        logits, present, cross_weights = self.decode(token_ids, no_bias, cross, src_mask, past)
        return logits[:, -1], present, cross_weights[:, -1]
