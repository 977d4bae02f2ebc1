"""Hierarchical attention network (Yang et al. 2016) over documents of sentences.

    word ids [D, S, W] -> embedding -> word BiGRU -> additive attention over words -> sentence vectors
    [D, S, 2H] -> sentence BiGRU -> additive attention over sentences -> document vector [D, 2H]
    heads: document class (3) from the document vector; sentence class (3) from each sentence's
    contextual state (sentence supervision during training, and each sentence's served label)

The word level reuses the sentiment model's pieces (AdditiveAttentionPooling, bidirectional_states).

Padding never changes a document's result, so a document alone and in a batch agree: words are read
within each sentence's length and padded words get the finite mask score; padded sentences (no
word) are read within each document's sentence count by the sentence GRUs and masked out of the
sentence attention. A padded sentence's rows of the outputs are meaningless and never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.models.layers import bidirectional_states
from training.models.sentiment_classifier import AdditiveAttentionPooling


@dataclass(frozen=True)
class HanConfig:
    vocab_size: int
    num_labels: int = 3
    embedding_dim: int = 128
    word_hidden_dim: int = 64
    sentence_hidden_dim: int = 64
    attention_dim: int = 64
    dropout: float = 0.3
    pad_id: int = 0


@dataclass(frozen=True)
class HanOutput:
    document_logits: torch.Tensor  # [D, labels]
    sentence_logits: torch.Tensor  # [D, S, labels]
    sentence_weights: torch.Tensor  # [D, S]
    word_weights: torch.Tensor  # [D, S, W]


class HierarchicalAttentionNetwork(nn.Module):
    def __init__(self, config: HanConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.word_forward = nn.GRU(config.embedding_dim, config.word_hidden_dim, batch_first=True)
        self.word_backward = nn.GRU(config.embedding_dim, config.word_hidden_dim, batch_first=True)
        self.word_attention = AdditiveAttentionPooling(2 * config.word_hidden_dim, config.attention_dim)
        self.sentence_forward = nn.GRU(2 * config.word_hidden_dim, config.sentence_hidden_dim, batch_first=True)
        self.sentence_backward = nn.GRU(2 * config.word_hidden_dim, config.sentence_hidden_dim, batch_first=True)
        self.sentence_attention = AdditiveAttentionPooling(2 * config.sentence_hidden_dim, config.attention_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.document_classifier = nn.Linear(2 * config.sentence_hidden_dim, config.num_labels)
        self.sentence_classifier = nn.Linear(2 * config.sentence_hidden_dim, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> HanOutput:
        """input_ids, attention_mask: [D, S, W]; a sentence is real when any of its words is."""
        docs, sentences, words = input_ids.shape
        flat_ids = input_ids.reshape(docs * sentences, words)
        flat_mask = attention_mask.reshape(docs * sentences, words)
        word_lengths = flat_mask.sum(dim=1)
        embedded = self.dropout(self.embedding(flat_ids))
        word_states = self.dropout(bidirectional_states(self.word_forward, self.word_backward, embedded, word_lengths))
        sentence_vectors, word_weights = self.word_attention(word_states, flat_mask)
        sentence_vectors = self.dropout(sentence_vectors).reshape(docs, sentences, -1)

        sentence_mask = (attention_mask.sum(dim=2) > 0).to(attention_mask.dtype)  # [D, S]
        sentence_states = self.dropout(bidirectional_states(
            self.sentence_forward, self.sentence_backward, sentence_vectors, sentence_mask.sum(dim=1)))
        document_vector, sentence_weights = self.sentence_attention(sentence_states, sentence_mask)
        return HanOutput(
            document_logits=self.document_classifier(self.dropout(document_vector)),
            sentence_logits=self.sentence_classifier(sentence_states),
            sentence_weights=sentence_weights,
            word_weights=word_weights.reshape(docs, sentences, words),
        )


class HanForExport(nn.Module):
    """What the ONNX graph computes: document probabilities, sentence weights and probabilities, word
    weights."""

    def __init__(self, model: HierarchicalAttentionNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(input_ids, attention_mask)
        return (torch.softmax(out.document_logits, dim=-1), out.sentence_weights,
                torch.softmax(out.sentence_logits, dim=-1), out.word_weights)
