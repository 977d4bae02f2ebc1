"""Convolutional sequence to sequence learning (ConvS2S, Gehring et al. 2017), after fairseq's fconv.

    source ids -> token embedding + position embedding = e  -> fc1 -> N x GLUConvBlock (centred kernel)
               -> fc2 = z (attention keys);   (z + e) * sqrt(0.5) (attention values)
    target ids -> token embedding + position embedding = g  -> fc1
               -> M x [causal GLU conv -> MultiStepAttention(h, g, z, z+e) -> residual] -> fc2
               -> embedding^T + bias = logits

Named after the paper:
- `GLUConvBlock`: a convolution to 2C channels and a gated linear unit A * sigmoid(B) back to C (3.2);
  the residual is added and the sum scaled by sqrt(0.5) so the variance stays constant through the
  stack (3.4, "Normalization Strategy").
- Position embeddings (3.1): learned, one table for the source and one for the target. Rows beyond
  what training saw (sources of the length-filtered data reach 90 subwords, targets 77) stay at their
  random initialisation; see docs/translation.md.
- `MultiStepAttention` (3.3): every decoder layer attends. Its query is the layer's state projected to
  the embedding size plus the decoder input embedding g; the keys are the encoder output z, the values
  z + e (the input element embedding gives "point information"). The attended sum is scaled by
  sqrt(source length) (3.4; with padding, each row's own length) and projected back, with a residual.
- The encoder output's gradient is scaled by 1 / (2 x decoder layers) during training (3.4: every
  decoder layer's attention reads it).

Initialisation follows 3.5 (and fairseq): weights N(0, sqrt(4 (1 - p) / n)) for convolutions feeding a
GLU, N(0, sqrt((1 - p) / n)) for linear layers after dropout, embeddings N(0, 0.1). Weight normalisation
is left out: AdamW with warm-up (training/loop.py) trains the stack without it, and it would have to be
folded into the weights for export.

Padding never changes a sentence's result: the encoder zeroes padded positions before every
convolution (a real position next to padding then sees the zeros a lone sentence's convolution pads
with), and attention adds the finite MASKED_SCORE to padded source positions. The decoder is causal,
so right-padding of targets never reaches a real position.

Two ways to run the decoder, which compute the same numbers:
- `forward(src_ids, src_mask, tgt_in_ids)`: teacher forcing over the whole target (training); each
  causal convolution sees (kernel - 1) zeros before the first position;
- `encode` once, then `decode_step(token_ids, src_mask, memory, state)` per token. The decoder state
  holds, per layer, the last (kernel - 1) inputs of its convolution (zeros at the start, exactly the
  left padding of the full pass), and the step's position as a float [B, 1] counter: the cache has a
  fixed size, so unlike the Transformer's its length cannot say where the step is. This is the ONNX
  decoder-step contract (docs/translation-graphs.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from training.models.layers import additive_mask

SQRT_HALF = math.sqrt(0.5)
DecoderState = dict[str, torch.Tensor]  # "position" [B, 1] float, "conv_{i}" [B, decoder_kernel - 1, channels]


@dataclass(frozen=True)
class ConvS2SConfig:
    vocab_size: int
    embedding_dim: int = 256
    channels: int = 256  # convolution width (encoder and decoder)
    encoder_layers: int = 4
    encoder_kernel: int = 3  # odd: centred on each source position
    decoder_layers: int = 3
    decoder_kernel: int = 3  # causal: the position and the (kernel - 1) before it
    dropout: float = 0.2
    max_positions: int = 256  # the service's longest source (incl. [EOS]) and longest output
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3


class EncoderMemory(NamedTuple):
    """What every decoder step reads (each [B, S, embedding_dim])."""

    keys: torch.Tensor  # z: the encoder output
    values: torch.Tensor  # (z + e) * sqrt(0.5): the output plus the source embeddings


def linear(in_features: int, out_features: int, dropout: float = 0.0) -> nn.Linear:
    """A linear layer initialised to keep the variance of (dropped-out) inputs (paper 3.5)."""
    layer = nn.Linear(in_features, out_features)
    nn.init.normal_(layer.weight, std=math.sqrt((1.0 - dropout) / in_features))
    nn.init.zeros_(layer.bias)
    return layer


def padding_bias(mask: torch.Tensor) -> torch.Tensor:
    """0/1 mask [B, S] -> additive bias [B, 1, S] (0 for real tokens, MASKED_SCORE for padding)."""
    return additive_mask(mask[:, None, :])


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient times `scale` backward (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class GLUConvBlock(nn.Module):
    """dropout -> Conv1d (C -> 2C) -> GLU. The caller pads the window (centred or causal) and adds the residual."""

    def __init__(self, channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(channels, 2 * channels, kernel)
        nn.init.normal_(self.conv.weight, std=math.sqrt(4.0 * (1.0 - dropout) / (kernel * channels)))
        assert self.conv.bias is not None  # Conv1d's default, for the type checker
        nn.init.zeros_(self.conv.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """Inputs [B, T + kernel - 1, C] (already padded) -> gated outputs [B, T, C]."""
        convolved = self.conv(self.dropout(window).transpose(1, 2))  # [B, 2C, T]
        return F.glu(convolved, dim=1).transpose(1, 2)


class MultiStepAttention(nn.Module):
    """One decoder layer's attention over the encoder output (paper 3.3)."""

    def __init__(self, channels: int, embedding_dim: int) -> None:
        super().__init__()
        self.in_projection = linear(channels, embedding_dim)
        self.out_projection = linear(embedding_dim, channels)

    def forward(self, h: torch.Tensor, target_embedding: torch.Tensor, memory: EncoderMemory, bias: torch.Tensor,
                length_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer states h [B, T, C] -> (h + attended) * sqrt(0.5) [B, T, C] and weights [B, T, S]."""
        query = (self.in_projection(h) + target_embedding) * SQRT_HALF  # d_i = W h_i + b + g_i
        weights = torch.softmax(query @ memory.keys.transpose(1, 2) + bias, dim=-1)
        conditional = (weights @ memory.values) * length_scale  # c_i, times sqrt(source length)
        return (self.out_projection(conditional) + h) * SQRT_HALF, weights


class ConvEncoder(nn.Module):
    def __init__(self, config: ConvS2SConfig) -> None:
        super().__init__()
        if config.encoder_kernel % 2 == 0:
            raise ValueError("encoder_kernel must be odd (a convolution centred on each position)")
        self.fc1 = linear(config.embedding_dim, config.channels, config.dropout)
        self.blocks = nn.ModuleList(GLUConvBlock(config.channels, config.encoder_kernel, config.dropout)
                                    for _ in range(config.encoder_layers))
        self.fc2 = linear(config.channels, config.embedding_dim)
        self.gradient_scale = 1.0 / (2.0 * config.decoder_layers)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> EncoderMemory:
        """Embedded source e [B, S, E] and its 0/1 mask -> keys z and values (z + e) * sqrt(0.5)."""
        keep = mask[:, :, None].to(embedded.dtype)
        x = self.fc1(embedded)
        for block in self.blocks:
            half = cast(GLUConvBlock, block).kernel // 2
            window = F.pad(x * keep, (0, 0, half, half))  # padding reads as the zeros beyond a sentence's end
            x = (block(window) + x) * SQRT_HALF
        z = self.fc2(x) * keep
        if self.training:
            z = cast(torch.Tensor, _ScaleGradient.apply(z, self.gradient_scale))
        return EncoderMemory(keys=z, values=(z + embedded) * SQRT_HALF)


class ConvDecoderLayer(nn.Module):
    """Causal GLU convolution, multi-step attention, residual: (attended + x) * sqrt(0.5)."""

    def __init__(self, config: ConvS2SConfig) -> None:
        super().__init__()
        self.block = GLUConvBlock(config.channels, config.decoder_kernel, config.dropout)
        self.attention = MultiStepAttention(config.channels, config.embedding_dim)

    def forward(self, x: torch.Tensor, past: torch.Tensor, target_embedding: torch.Tensor, memory: EncoderMemory,
                bias: torch.Tensor, length_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, C] after the inputs `past` [B, kernel - 1, C] -> (outputs [B, T, C], the last kernel - 1
        inputs, attention weights [B, T, S])."""
        window = torch.cat([past, x], dim=1)
        attended, weights = self.attention(self.block(window), target_embedding, memory, bias, length_scale)
        present = window[:, window.shape[1] - past.shape[1]:]
        return (attended + x) * SQRT_HALF, present, weights


class ConvS2S(nn.Module):
    def __init__(self, config: ConvS2SConfig) -> None:
        super().__init__()
        self.config = config
        # One token table for source, target and output projection (the joint BPE), as the other translators.
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.source_positions = nn.Embedding(config.max_positions, config.embedding_dim)
        self.target_positions = nn.Embedding(config.max_positions, config.embedding_dim)
        for table in (self.embedding, self.source_positions, self.target_positions):
            nn.init.normal_(table.weight, std=0.1)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.encoder = ConvEncoder(config)
        self.decoder_fc1 = linear(config.embedding_dim, config.channels, config.dropout)
        self.decoder_layers = nn.ModuleList(ConvDecoderLayer(config) for _ in range(config.decoder_layers))
        self.decoder_fc2 = linear(config.channels, config.embedding_dim)
        self.output_dropout = nn.Dropout(config.dropout)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> tuple[EncoderMemory, DecoderState]:
        """Source ids and 0/1 mask [B, S] -> the memory every step reads, and the decoder's initial state."""
        positions = torch.arange(src_ids.shape[1], device=src_ids.device)
        e = self.embedding_dropout(self.embedding(src_ids) + self.source_positions(positions)[None])
        return self.encoder(e, src_mask), self.initial_state(src_ids.shape[0], e)

    def initial_state(self, batch: int, like: torch.Tensor) -> DecoderState:
        """Position 0 and, per layer, the (kernel - 1) zeros before the first target position."""
        state = {"position": like.new_zeros(batch, 1)}
        for index in range(self.config.decoder_layers):
            state[f"conv_{index}"] = like.new_zeros(batch, self.config.decoder_kernel - 1, self.config.channels)
        return state

    def decode(self, tgt_ids: torch.Tensor, positions: torch.Tensor, src_mask: torch.Tensor, memory: EncoderMemory,
               state: DecoderState) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """Target ids [B, T] at `positions` ([T] or [B, T]) after `state` -> logits [B, T, V], the new
        state (position not advanced) and the attention averaged over the decoder layers [B, T, S]."""
        g = self.embedding_dropout(self.embedding(tgt_ids) + self.target_positions(positions))
        bias = padding_bias(src_mask)
        length_scale = src_mask.sum(dim=1).to(g.dtype).sqrt()[:, None, None]
        x = self.decoder_fc1(g)
        new_state: DecoderState = {}
        layer_weights = []
        for index, layer in enumerate(self.decoder_layers):
            x, new_state[f"conv_{index}"], weights = layer(x, state[f"conv_{index}"], g, memory, bias, length_scale)
            layer_weights.append(weights)
        logits = self.output_dropout(self.decoder_fc2(x)) @ self.embedding.weight.t() + self.output_bias
        return logits, new_state, torch.stack(layer_weights).mean(dim=0)

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt_in_ids: torch.Tensor,
                tgt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] for every target position at once.

        `tgt_mask` is accepted for the Transformer's signature and unused: the decoder is causal, so
        padding after a target's end never reaches its real positions (the loss ignores the padded ones).
        """
        memory, state = self.encode(src_ids, src_mask)
        positions = torch.arange(tgt_in_ids.shape[1], device=tgt_in_ids.device)
        logits, _, _ = self.decode(tgt_in_ids, positions, src_mask, memory, state)
        return logits

    def decode_step(self, token_ids: torch.Tensor, src_mask: torch.Tensor, memory: EncoderMemory,
                    state: DecoderState) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One target position per row: token_ids [B] -> (log_probs [B, V], new state, attention weights [B, S])."""
        position = state["position"]
        logits, new_state, weights = self.decode(token_ids[:, None], position.long(), src_mask, memory, state)
        new_state["position"] = position + 1
        return torch.log_softmax(logits[:, 0], dim=-1), new_state, weights[:, 0]
