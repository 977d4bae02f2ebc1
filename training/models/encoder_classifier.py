"""A pre-trained BERT-family encoder (the packaged MiniLM) fine-tuned as a text classifier.

    [CLS] subwords [SEP] -> encoder -> additive attention pooling over the text's subwords -> linear

The head pools with the same additive attention as the BiGRU classifier (sentiment_classifier.py), so
the exported graph answers the same contract (probabilities and one attention weight per position)
and the same pipeline serves both. [CLS] and [SEP] are left out of the pooling (their weight is 0):
the weights a client sees are over its text's subwords and sum to 1 over them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from training.models.minilm_tagger import minilm_dir
from training.models.sentiment_classifier import AdditiveAttentionPooling

if TYPE_CHECKING:
    from transformers import BertModel


class EncoderAttentionClassifier(nn.Module):
    def __init__(self, num_labels: int, special_ids: list[int], attention_dim: int = 128, dropout: float = 0.1,
                 encoder: BertModel | None = None, aux_labels: int = 0) -> None:
        """`special_ids`: token ids left out of the pooling ([CLS], [SEP]); `encoder`: a BertModel to use
        instead of the packaged MiniLM (tests pass a tiny random one); `aux_labels` > 0: a second,
        training-only classifier on the same pooled state, for data labelled under another rule (the
        sentiment model's CrowdFlower tweets); it is not exported."""
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import BertModel  # training-only dependency

        self.encoder = encoder or BertModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False)
        hidden = self.encoder.config.hidden_size
        self.register_buffer("special_ids", torch.tensor(special_ids, dtype=torch.int64), persistent=False)
        self.special_ids: torch.Tensor
        self.attention = AdditiveAttentionPooling(hidden, attention_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        self.aux_classifier = nn.Linear(hidden, aux_labels) if aux_labels else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                head: str = "main") -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, num_labels] (head "aux": [B, aux_labels]) and attention weights [B, T] (0 on padding
        and special tokens)."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        special = (input_ids.unsqueeze(-1) == self.special_ids).any(-1)
        pooled, weights = self.attention(states, attention_mask * (~special).to(attention_mask.dtype))
        if head == "aux":
            assert self.aux_classifier is not None, "this classifier has no auxiliary head"
            return self.aux_classifier(self.dropout(pooled)), weights
        return self.classifier(self.dropout(pooled)), weights
