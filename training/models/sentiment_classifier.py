"""Sentiment classifier: a bidirectional GRU encoder with additive attention pooling.

    tokens -> embedding -> BiGRU -> additive attention (Bahdanau: score = v . tanh(W h)) -> softmax
    over positions -> weighted sum of states -> linear -> 3 classes

The attention weights are returned beside the logits and become the ONNX graph's second output, so a
client sees which tokens the decision leaned on.

Padding never changes a text's result (a batch of one and a padded batch of many agree): the two
GRUs read each text as `bidirectional_states` does (training/models/layers.py), and padded positions
get the finite MASKED_SCORE added to their attention score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.models.layers import additive_mask, bidirectional_states


@dataclass(frozen=True)
class SentimentModelConfig:
    vocab_size: int
    num_labels: int = 3
    embedding_dim: int = 128
    hidden_dim: int = 128
    attention_dim: int = 128
    dropout: float = 0.3
    pad_id: int = 0
    # Training-only heads on the shared encoder (not exported): a regression head on the raters' mean
    # score, and a classifier for an auxiliary corpus labelled on a different scale.
    score_head: bool = False
    aux_labels: int = 0


class AdditiveAttentionPooling(nn.Module):
    """Bahdanau-style attention with a learned query: one weight per position, summing to 1."""

    def __init__(self, input_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(input_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.project(states))).squeeze(-1)  # [B, T]
        scores = scores + additive_mask(mask, scores.dtype)
        weights = torch.softmax(scores, dim=-1)
        pooled = torch.bmm(weights.unsqueeze(1), states).squeeze(1)  # [B, H]
        return pooled, weights


class BiGRUAttentionClassifier(nn.Module):
    def __init__(self, config: SentimentModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.forward_gru = nn.GRU(config.embedding_dim, config.hidden_dim, batch_first=True)
        self.backward_gru = nn.GRU(config.embedding_dim, config.hidden_dim, batch_first=True)
        self.attention = AdditiveAttentionPooling(2 * config.hidden_dim, config.attention_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * config.hidden_dim, config.num_labels)
        self.score_regressor = nn.Linear(2 * config.hidden_dim, 1) if config.score_head else None
        self.aux_classifier = nn.Linear(2 * config.hidden_dim, config.aux_labels) if config.aux_labels else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, head: str = "sentiment"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, num_labels] and attention weights [B, T].

        Training-only heads run inside forward (so DDP sees them): head="score" returns the predicted
        mean rating in -1..1 [B] in place of the attention weights; head="aux" the auxiliary logits.
        """
        pooled, weights = self.encode(input_ids, attention_mask)
        if head == "aux" and self.aux_classifier is not None:
            return self.aux_classifier(pooled), weights
        if head == "score" and self.score_regressor is not None:
            return self.classifier(pooled), torch.tanh(self.score_regressor(pooled).squeeze(-1))
        if head != "sentiment":
            raise ValueError(f"no head {head!r} in this model")
        return self.classifier(pooled), weights

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention-pooled text vector [B, 2H] (after dropout) and the attention weights [B, T]."""
        lengths = attention_mask.sum(dim=1)
        embedded = self.dropout(self.embedding(input_ids))
        states = self.dropout(bidirectional_states(self.forward_gru, self.backward_gru, embedded, lengths))
        pooled, weights = self.attention(states, attention_mask)
        return self.dropout(pooled), weights


class SentimentForExport(nn.Module):
    """What the ONNX graph computes: class probabilities and attention weights."""

    def __init__(self, model: BiGRUAttentionClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, weights = self.model(input_ids, attention_mask)
        return torch.softmax(logits, dim=-1), weights
