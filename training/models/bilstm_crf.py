"""BiLSTM-CRF tagger from scratch (Lample et al. 2016; Ma & Hovy 2016 for the char-CNN).

    per word: [word embedding (lowercased key) ; char-CNN max-pooled over the word's characters ;
               shape embedding (casing, mention, hashtag, URL, ...)]
    -> BiLSTM over the words -> linear -> emission scores [B, T, tags] -> CRF (training/models/crf.py)

The ONNX graph computes the emissions only; the service decodes them with numpy Viterbi using the CRF
parameters saved beside the graph. Padding never changes a sentence's emissions: the two LSTMs read
each sentence as `bidirectional_states` does (training/models/layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.models.crf import CRF
from training.models.layers import MASKED_SCORE, bidirectional_states


@dataclass(frozen=True)
class BiLSTMCRFConfig:
    vocab_size: int
    char_vocab_size: int
    shape_vocab_size: int
    num_tags: int
    word_dim: int = 100
    char_dim: int = 30
    char_filters: int = 50
    char_kernel: int = 3
    shape_dim: int = 16
    hidden_dim: int = 200
    dropout: float = 0.5
    word_dropout: float = 0.05  # training only: replace a word id by <unk>, so unknown words are learned
    unk_id: int = 1


class CharCNN(nn.Module):
    def __init__(self, vocab_size: int, dim: int, filters: int, kernel: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, filters, kernel, padding=kernel // 2)

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """char_ids [B, T, C] -> [B, T, filters], max over the word's real characters."""
        batch, words, chars = char_ids.shape
        flat = char_ids.reshape(batch * words, chars)
        # Padding characters embed to zero whatever the weights, so the convolution at a word's edge
        # sees the same zeros in a wide padded batch as in the convolution's own zero padding.
        embedded = self.embedding(flat) * (flat != 0).unsqueeze(-1).to(self.embedding.weight.dtype)
        features = self.conv(embedded.transpose(1, 2))  # [B*T, filters, C]
        # Padding characters must not win the max: push them far down (finite, for ONNX parity).
        features = features + (flat == 0).unsqueeze(1).to(features.dtype) * MASKED_SCORE
        pooled = features.max(dim=2).values
        # A padding word has only padding characters: its max is ~MASKED_SCORE, and it becomes 0.
        pooled = torch.where(pooled < MASKED_SCORE / 2, torch.zeros_like(pooled), pooled)
        return pooled.reshape(batch, words, -1)


class BiLSTMCRF(nn.Module):
    def __init__(self, config: BiLSTMCRFConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embedding = nn.Embedding(config.vocab_size, config.word_dim, padding_idx=0)
        self.chars = CharCNN(config.char_vocab_size, config.char_dim, config.char_filters, config.char_kernel)
        self.shape_embedding = nn.Embedding(config.shape_vocab_size, config.shape_dim, padding_idx=0)
        input_dim = config.word_dim + config.char_filters + config.shape_dim
        self.forward_lstm = nn.LSTM(input_dim, config.hidden_dim, batch_first=True)
        self.backward_lstm = nn.LSTM(input_dim, config.hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.emit = nn.Linear(2 * config.hidden_dim, config.num_tags)
        self.crf = CRF(config.num_tags)

    def forward(self, word_ids: torch.Tensor, char_ids: torch.Tensor, shape_ids: torch.Tensor,
                mask: torch.Tensor, tags: torch.Tensor | None = None) -> torch.Tensor:
        """Emission scores [B, T, tags] (the exported graph); with `tags`, the CRF negative log-likelihood.
        The loss runs inside forward so that a DistributedDataParallel wrapper, which syncs the gradients
        of what its forward computed, syncs the CRF's too (a loss outside it failed under torchrun)."""
        if self.training and self.config.word_dropout:
            drop = torch.rand(word_ids.shape, device=word_ids.device) < self.config.word_dropout
            word_ids = torch.where(drop & (word_ids > 0), torch.full_like(word_ids, self.config.unk_id), word_ids)
        features = torch.cat(
            [self.word_embedding(word_ids), self.chars(char_ids), self.shape_embedding(shape_ids)], dim=-1
        )
        features = self.dropout(features)
        states = self.dropout(bidirectional_states(self.forward_lstm, self.backward_lstm, features, mask.sum(dim=1)))
        emissions = self.emit(states)
        return emissions if tags is None else self.crf.neg_log_likelihood(emissions, tags, mask)

    def loss(self, inputs: dict[str, torch.Tensor], tags: torch.Tensor) -> torch.Tensor:
        return self(inputs["word_ids"], inputs["char_ids"], inputs["shape_ids"], inputs["mask"], tags)
