"""The BiLSTM-CRF side of training/train_ner.py: vocabularies from the training split, inputs through the
service's own featurizer, CRF loss, torch Viterbi for dev early stopping."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from service.pipelines.ner_features import PAD, SHAPES, UNK, URL, WordFeaturizer, word_key
from training.configs import ner as cfg
from training.data.ner import TAGS, Tweet, word_tags
from training.models.bilstm_crf import BiLSTMCRF, BiLSTMCRFConfig


def build_vocab(train_tweets: list[Tweet]) -> dict[str, list[str]]:
    """Words seen >= BILSTM_MIN_WORD_COUNT times in train, and every train character; sorted, so the
    same split always gives the same ids."""
    word_counts: collections.Counter[str] = collections.Counter()
    chars: set[str] = set()
    for tweet in train_tweets:
        for word in word_tags(tweet)[0]:
            word_counts[word_key(word.text)] += 1
            chars.update(word.text[: cfg.BILSTM_MAX_WORD_CHARS])
    words = sorted(w for w, n in word_counts.items() if n >= cfg.BILSTM_MIN_WORD_COUNT and w != URL)
    return {"words": [PAD, UNK, URL, *words], "chars": [PAD, UNK, *sorted(chars)]}


def to_tensors(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def build_bilstm_recipe(train_tweets: list[Tweet], recipe_class: type, tags: Sequence[str] = TAGS,
                        model_config: dict[str, Any] | None = None) -> Any:
    """`tags`: the tag set, O first (WNUT's by default); `model_config`: BiLSTMCRFConfig sizes (default
    cfg.BILSTM)."""
    vocab = build_vocab(train_tweets)
    featurizer = WordFeaturizer(vocab["words"], vocab["chars"], cfg.BILSTM_MAX_WORD_CHARS)
    tag_names = list(tags)
    config = BiLSTMCRFConfig(vocab_size=len(vocab["words"]), char_vocab_size=len(vocab["chars"]),
                             shape_vocab_size=len(SHAPES) + 1, num_tags=len(tag_names),
                             unk_id=vocab["words"].index(UNK), **(cfg.BILSTM if model_config is None else model_config))
    model = BiLSTMCRF(config)
    tag_id = {tag: i for i, tag in enumerate(tag_names)}

    def encode(tweets: list[Tweet]) -> list[Any]:
        rows = []
        for tweet in tweets:
            words, tags = word_tags(tweet)
            words, tags = words[: cfg.MAX_WORDS], tags[: cfg.MAX_WORDS]
            rows.append(([w.text for w in words], [tag_id[t] for t in tags]))
        return rows

    def collate(rows: list[Any]) -> Any:
        inputs = to_tensors(featurizer.batch([r[0] for r in rows]))
        tags = torch.zeros(inputs["mask"].shape, dtype=torch.long)
        for i, (_, row_tags) in enumerate(rows):
            tags[i, : len(row_tags)] = torch.tensor(row_tags)
        return inputs, tags

    def loss(module: nn.Module, batch: Any) -> torch.Tensor:
        inputs, tags = batch
        # Through the module's own forward (not .loss): under torchrun `module` is the DDP wrapper.
        return module(inputs["word_ids"], inputs["char_ids"], inputs["shape_ids"], inputs["mask"], tags)

    def predict(module: nn.Module, batch: Any) -> list[list[str]]:
        inputs, _ = batch
        emissions = module(inputs["word_ids"], inputs["char_ids"], inputs["shape_ids"], inputs["mask"])
        crf = cast(BiLSTMCRF, module).crf  # evaluation gets the model itself, never the DDP wrapper
        return [[tag_names[t] for t in path] for path in crf.viterbi(emissions, inputs["mask"])]

    return recipe_class(model, encode, collate, loss, predict,
                        {"vocab": vocab, "model_config": config.__dict__})
