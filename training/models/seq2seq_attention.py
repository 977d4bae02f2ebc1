"""RNN encoder-decoder with attention for translation (Bahdanau et al. 2015; Luong et al. 2015).

    source ids -> embedding -> BidirectionalEncoder (GRU or LSTM, stacked) -> encoder states [B, S, 2He]
                                                   \\-> final states -> Bridge -> decoder's first hidden
    target ids -> embedding -> decoder RNN -> h_t -> Attention(h_t, encoder states) -> context c_t
               -> attentional vector tanh(W_c [c_t; h_t]) -> embedding^T = logits

The attention score function is configurable (Luong's names): "dot" h_t . h_s, "general" h_t . W_a h_s,
and "concat" (= "additive", Bahdanau's) v . tanh(W_q h_t + W_k h_s). So is its span: "global" attends over
the whole source; "local-p" (Luong 3.2) predicts an aligned position p_t = S sigmoid(v_p . tanh(W_p h_t))
from the decoder state (S: the row's own source length) and attends only within [p_t - D, p_t + D],
favouring positions near p_t with a Gaussian of sigma = D/2 (`LocalWindow`). The recurrent cell is
"rnn" (Elman, tanh), "gru" or "lstm", encoder and decoder alike. The h_s-side projections do not
depend on the decoder, so they are computed once per source batch (`EncoderMemory.keys`): the step graph
then only projects the query. With input feeding (Luong 3.3) the previous attentional vector is
concatenated to the next RNN input, which makes training step through the target one token at a time;
without it the decoder RNN runs over the whole target in one call, several times faster on CPU.

Two ways to run the decoder, which compute the same numbers:
- `forward(src_ids, src_mask, tgt_in_ids)`: teacher forcing over the whole target (training);
- `encode` once, then `decode_step(token_ids, src_mask, memory, state)` per token. The decoder state is
  a dict of tensors with batch on axis 0 ("hidden" [B, layers, H], and "cell" for LSTM, "feed" [B, E]
  with input feeding); `encode` returns its initial value. This is the ONNX decoder-step contract.

Padding never changes a sentence's result: each encoder layer reads the sentence as
`bidirectional_states` does (training/models/layers.py), the bridge reads the states at each sentence's
own ends, attention adds the finite MASKED_SCORE to padded positions, and local-p's window is placed by
each row's own length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from training.models.layers import MASKED_SCORE, additive_mask, bidirectional_states

RNN_TYPES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}  # nn.RNN: Elman, tanh
SCORE_FUNCTIONS = ("dot", "general", "concat", "additive")
ATTENTION_SPANS = ("global", "local-p")
DecoderState = dict[str, torch.Tensor]  # "hidden" [B, L, H], optional "cell" [B, L, H], "feed" [B, E]


@dataclass(frozen=True)
class Seq2SeqConfig:
    vocab_size: int
    embedding_dim: int = 256
    encoder_hidden: int = 128  # per direction: encoder states are 2 x this wide
    decoder_hidden: int = 256
    encoder_layers: int = 1
    decoder_layers: int = 1
    rnn_type: str = "gru"  # "rnn" (Elman), "gru" or "lstm", encoder and decoder alike
    attention: str = "general"  # "dot", "general", "concat" / "additive"
    attention_span: str = "global"  # "global" (every source position) or "local-p" (a predicted window)
    local_window: int = 8  # local-p: D, the window's half width in source tokens (sigma = D / 2)
    attention_dim: int = 256  # width of the concat/additive score's hidden layer
    input_feeding: bool = False
    tie_embeddings: bool = True  # output projection = the (joint-vocabulary) input embedding
    dropout: float = 0.2
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3


class EncoderMemory(NamedTuple):
    """What every decoder step reads: the encoder states (attention values) and their precomputed keys."""

    states: torch.Tensor  # [B, S, 2 * encoder_hidden]
    keys: torch.Tensor  # [B, S, key width]: W_a h_s ("general"), W_k h_s ("concat"), h_s ("dot")


def padding_bias(mask: torch.Tensor) -> torch.Tensor:
    """0/1 mask [B, S] -> additive bias [B, 1, S] (0 for real tokens, MASKED_SCORE for padding)."""
    return additive_mask(mask[:, None, :])


class BidirectionalEncoder(nn.Module):
    """Stacked layers of a forward and a backward RNN; each layer reads the previous layer's [fwd; bwd]."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        rnn = RNN_TYPES[config.rnn_type]
        sizes = [config.embedding_dim] + [2 * config.encoder_hidden] * (config.encoder_layers - 1)
        self.forward_rnns = nn.ModuleList(rnn(size, config.encoder_hidden, batch_first=True) for size in sizes)
        self.backward_rnns = nn.ModuleList(rnn(size, config.encoder_hidden, batch_first=True) for size in sizes)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded source [B, S, E] -> states [B, S, 2He] and the top layer's summary [B, 2He]:
        the forward RNN's state at each sentence's last token beside the backward RNN's at its first."""
        lengths = mask.sum(dim=1)
        x = embedded
        for index, (forward_rnn, backward_rnn) in enumerate(zip(self.forward_rnns, self.backward_rnns, strict=True)):
            if index:
                x = self.dropout(x)
            x = bidirectional_states(forward_rnn, backward_rnn, x, lengths)
        width = x.shape[-1] // 2
        # Clamp: an all-padding row (never sent, but possible) reads position 0 instead of failing.
        last = (lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, width)
        forward_final = torch.gather(x[:, :, :width], 1, last).squeeze(1)
        backward_final = x[:, 0, width:]
        return x, torch.cat([forward_final, backward_final], dim=-1)


class Bridge(nn.Module):
    """Encoder summary -> the decoder's initial state: tanh(W s) per decoder layer (and cell, for LSTM).

    A learned map rather than copying the final states, so encoder and decoder widths and depths may
    differ; the input-feeding vector starts at zero (no attention has happened yet).
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        size = config.decoder_layers * config.decoder_hidden
        self.hidden = nn.Linear(2 * config.encoder_hidden, size)
        self.cell = nn.Linear(2 * config.encoder_hidden, size) if config.rnn_type == "lstm" else None

    def forward(self, summary: torch.Tensor) -> DecoderState:
        batch = summary.shape[0]
        shape = (batch, self.config.decoder_layers, self.config.decoder_hidden)
        state = {"hidden": torch.tanh(self.hidden(summary)).view(shape)}
        if self.cell is not None:
            state["cell"] = torch.tanh(self.cell(summary)).view(shape)
        if self.config.input_feeding:
            state["feed"] = summary.new_zeros(batch, self.config.embedding_dim)
        return state


class LocalWindow(nn.Module):
    """Luong et al.'s local-p span (eq. 9-10) as an additive bias on the scores of each decoder step.

    p_t = S sigmoid(v_p . tanh(W_p h_t)), with S the row's own source length (its mask's sum, so padding
    never moves the window), and positions s (0-based) in [p_t - D, p_t + D] keep their score plus
    -(s - p_t)^2 / (2 sigma^2), sigma = D / 2; the others get MASKED_SCORE. A softmax over score + bias
    is Luong's window-softmax times the Gaussian, renormalised: the weights still sum to one (the context
    stays an average of encoder states, like global attention's, and the served alignments/coverage read
    them as such). Since p_t <= S and D >= 1, a real token always lies in the window. The hard edge has no
    gradient with respect to p_t; the Gaussian term is what trains W_p and v_p.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if config.local_window < 1:
            raise ValueError(f"local_window must be >= 1 source token, got {config.local_window}")
        self.half_width = float(config.local_window)
        self.sigma = config.local_window / 2
        self.position = nn.Linear(config.decoder_hidden, config.attention_dim, bias=False)  # W_p
        self.position_energy = nn.Linear(config.attention_dim, 1, bias=False)  # v_p

    def centres(self, queries: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decoder states [B, T, Hd] and source mask [B, S] -> p_t [B, T, 1], in [0, row length]."""
        lengths = mask.sum(dim=1).to(queries.dtype)[:, None, None]
        return lengths * torch.sigmoid(self.position_energy(torch.tanh(self.position(queries))))

    def forward(self, queries: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> the additive bias [B, T, S] for the scores (padding not included: the caller adds it)."""
        centres = self.centres(queries, mask)
        # Positions from the mask's shape by a cumulative sum, so the exported graph keeps src_len dynamic.
        positions = (torch.ones_like(mask).cumsum(dim=1) - 1).to(queries.dtype)[:, None, :]  # [B, 1, S]
        distance = positions - centres
        gaussian = -(distance**2) / (2 * self.sigma**2)
        outside = (distance.abs() > self.half_width).to(queries.dtype)
        return gaussian + outside * MASKED_SCORE


class Attention(nn.Module):
    """Attention over the encoder states with a dot, general or concat/additive score, global or local-p."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if config.attention not in SCORE_FUNCTIONS:
            raise ValueError(f"unknown attention {config.attention!r}; expected one of {SCORE_FUNCTIONS}")
        if config.attention_span not in ATTENTION_SPANS:
            raise ValueError(f"unknown attention_span {config.attention_span!r}; expected one of {ATTENTION_SPANS}")
        self.window = LocalWindow(config) if config.attention_span == "local-p" else None
        memory_width = 2 * config.encoder_hidden
        self.kind = "concat" if config.attention == "additive" else config.attention
        if self.kind == "dot" and memory_width != config.decoder_hidden:
            raise ValueError("dot attention needs decoder_hidden == 2 * encoder_hidden")
        self.key = None
        self.query = None
        self.energy = None
        if self.kind == "general":
            self.key = nn.Linear(memory_width, config.decoder_hidden, bias=False)
        elif self.kind == "concat":
            self.key = nn.Linear(memory_width, config.attention_dim, bias=False)
            self.query = nn.Linear(config.decoder_hidden, config.attention_dim)
            self.energy = nn.Linear(config.attention_dim, 1, bias=False)

    def keys(self, states: torch.Tensor) -> torch.Tensor:
        """The source side of the score, computed once per source batch."""
        return states if self.key is None else self.key(states)

    def forward(self, queries: torch.Tensor, memory: EncoderMemory, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries [B, T, Hd], source mask [B, S] -> context [B, T, 2He] and weights [B, T, S] (padding ~0)."""
        bias = padding_bias(mask)
        if self.window is not None:
            bias = bias + self.window(queries, mask)
        if self.query is not None and self.energy is not None:  # concat / additive
            hidden = torch.tanh(self.query(queries)[:, :, None, :] + memory.keys[:, None, :, :])  # [B, T, S, A]
            scores = self.energy(hidden).squeeze(-1)
        else:  # dot / general: the keys already hold h_s or W_a h_s
            scores = queries @ memory.keys.transpose(1, 2)
        weights = torch.softmax(scores + bias, dim=-1)
        return weights @ memory.states, weights


class AttentionalDecoder(nn.Module):
    """Decoder RNN + attention + the attentional vector tanh(W_c [context; h_t]) (Luong eq. 5)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        input_size = config.embedding_dim * (2 if config.input_feeding else 1)
        self.rnn = RNN_TYPES[config.rnn_type](
            input_size, config.decoder_hidden, num_layers=config.decoder_layers, batch_first=True,
            dropout=config.dropout if config.decoder_layers > 1 else 0.0)
        self.attention = Attention(config)
        self.combine = nn.Linear(2 * config.encoder_hidden + config.decoder_hidden, config.embedding_dim)
        self.dropout = nn.Dropout(config.dropout)

    def run_rnn(self, x: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        # nn.RNN/GRU/LSTM keep layers on axis 0; the exported state keeps batch there (beam reordering).
        hidden = state["hidden"].transpose(0, 1).contiguous()
        if "cell" in state:
            outputs, (hidden, cell) = self.rnn(x, (hidden, state["cell"].transpose(0, 1).contiguous()))
            return outputs, {"hidden": hidden.transpose(0, 1), "cell": cell.transpose(0, 1)}
        outputs, hidden = self.rnn(x, hidden)
        return outputs, {"hidden": hidden.transpose(0, 1)}

    def attend(self, outputs: torch.Tensor, memory: EncoderMemory, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        context, weights = self.attention(outputs, memory, mask)
        return torch.tanh(self.combine(torch.cat([context, outputs], dim=-1))), weights

    def forward(self, embedded: torch.Tensor, memory: EncoderMemory, mask: torch.Tensor, state: DecoderState
                ) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """Embedded targets [B, T, E] after `state`, source mask [B, S] -> attentional vectors [B, T, E],
        new state, weights [B, T, S]."""
        if not self.config.input_feeding:  # the whole target in one RNN call, attention for all positions at once
            outputs, new_state = self.run_rnn(embedded, state)
            attentional, weights = self.attend(outputs, memory, mask)
            return attentional, new_state, weights
        attentional_steps, weight_steps = [], []
        for t in range(embedded.shape[1]):  # each input needs the previous step's attentional vector
            x = torch.cat([embedded[:, t : t + 1], state["feed"][:, None, :]], dim=-1)
            outputs, new_state = self.run_rnn(x, state)
            attentional, weights = self.attend(outputs, memory, mask)
            state = {**new_state, "feed": attentional[:, 0]}
            attentional_steps.append(attentional)
            weight_steps.append(weights)
        return torch.cat(attentional_steps, dim=1), state, torch.cat(weight_steps, dim=1)


class Seq2SeqAttention(nn.Module):
    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if config.rnn_type not in RNN_TYPES:
            raise ValueError(f"unknown rnn_type {config.rnn_type!r}; expected one of {sorted(RNN_TYPES)}")
        self.config = config
        # One matrix for source and target (joint BPE); N(0, E^-1/2) keeps tied logits O(1), and inputs
        # are scaled back up by sqrt(E) so the RNNs see unit-scale features.
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        nn.init.normal_(self.embedding.weight, std=config.embedding_dim**-0.5)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.encoder = BidirectionalEncoder(config)
        self.bridge = Bridge(config)
        self.decoder = AttentionalDecoder(config)
        self.output_dropout = nn.Dropout(config.dropout)
        self.output = None if config.tie_embeddings else nn.Linear(config.embedding_dim, config.vocab_size)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.tie_embeddings else None

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding_dropout(self.embedding(ids) * math.sqrt(self.config.embedding_dim))

    def project(self, attentional: torch.Tensor) -> torch.Tensor:
        x = self.output_dropout(attentional)
        if self.output is not None:
            return self.output(x)
        assert self.output_bias is not None
        return x @ self.embedding.weight.t() + self.output_bias

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> tuple[EncoderMemory, DecoderState]:
        """Source ids and 0/1 mask [B, S] -> the memory every step reads, and the decoder's initial state."""
        states, summary = self.encoder(self.embed(src_ids), src_mask)
        return EncoderMemory(states, self.decoder.attention.keys(states)), self.bridge(summary)

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt_in_ids: torch.Tensor,
                tgt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] for every target position at once.

        No target mask is needed (`tgt_mask` is accepted for the Transformer's signature and unused):
        the decoder is left-to-right, so padding after a target's end never reaches its real positions
        (the loss ignores the padded ones).
        """
        memory, state = self.encode(src_ids, src_mask)
        attentional, _, _ = self.decoder(self.embed(tgt_in_ids), memory, src_mask, state)
        return self.project(attentional)

    def decode_step(self, token_ids: torch.Tensor, src_mask: torch.Tensor, memory: EncoderMemory,
                    state: DecoderState) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One target position per row: token_ids [B] -> (log_probs [B, V], new state, attention weights [B, S])."""
        attentional, new_state, weights = self.decoder(self.embed(token_ids[:, None]), memory, src_mask, state)
        return torch.log_softmax(self.project(attentional[:, 0]), dim=-1), new_state, weights[:, 0]
