"""Text classification with any label set: tokenize -> onnxruntime -> labels, probabilities and
attention over tokens.

One pipeline serves every classifier whose graph takes `input_ids` and `attention_mask` and gives
`probabilities` [batch, labels] and `attention` [batch, sequence] (weights of one text summing to 1):
the models `python -m training.train classification` makes (task "classification": a BiGRU trained
from scratch, or a fine-tuned BERT-family encoder whose tokenizer adds [CLS]/[SEP]) and the sentiment
models (task "sentiment", served through Sentiment.Analyze as well). The server and the evaluation
commands both call it, so published quality is served quality.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from service.model.loaded_model import LoadedModel
from service.model.pipeline import Pipeline
from service.model.timing import StageTimings
from service.pipelines.text_replacements import Normalised, TextReplacements

TASK = "classification"
# Sentiment models are classifiers with the labels negative/neutral/positive; Classify serves them too.
TASKS = (TASK, "sentiment")


@dataclass(frozen=True)
class TokenWeight:
    token: str
    weight: float
    start: int
    end: int


@dataclass(frozen=True)
class TokenParts:
    """One text's tokens as the pipeline has them: the TokenWeight list is built from these when read."""

    tokens: tuple[str, ...]
    weights: tuple[float, ...]
    offsets: tuple[tuple[int, int], ...]
    shown: tuple[bool, ...]   # False for special tokens, which are not listed

    def token_weights(self) -> list[TokenWeight]:
        return [TokenWeight(token, weight, start, end)
                for token, weight, (start, end), keep in zip(self.tokens, self.weights, self.offsets, self.shown,
                                                              strict=True)
                if keep]


@dataclass(frozen=True)
class ClassPrediction:
    label: str
    probabilities: dict[str, float]  # in the model's label order
    truncated: bool
    # The per-token attention, built only when `tokens` is read: a call that asks for no tokens
    # (omit_tokens) never pays for a TokenWeight per token, which was Python work done under the GIL in
    # the inference thread for every text (issue #20).
    token_parts: TokenParts = field(repr=False)

    @functools.cached_property
    def tokens(self) -> list[TokenWeight]:
        return self.token_parts.token_weights()


class ClassificationPipeline(Pipeline[str, ClassPrediction]):
    tasks: tuple[str, ...] = TASKS

    def __init__(self, model: LoadedModel) -> None:
        if model.task not in self.tasks or model.tokenizer is None:
            raise ValueError(f"model {model.name} is not a {' or '.join(self.tasks)} model with a tokenizer")
        self.model = model
        self.tokenizer = model.tokenizer
        self.labels = model.manifest.labels
        special = model.manifest.spec.special_tokens
        if special is None:
            raise ValueError(f"model {model.name} has no special_tokens section")
        section = model.manifest.spec.classification
        # A BERT-family encoder was trained on [CLS] text [SEP]; the BiGRU on the text's subwords alone.
        self.add_special_tokens = section.add_special_tokens if section is not None else False
        # Emoji and emoticons as words, when the version was trained that way (its table ships with it).
        self.replacements: TextReplacements | None = None
        if section is not None and section.replacements:
            table = model.manifest.path(section.replacements)
            if not table.is_file():
                raise ValueError(f"model {model.name}: classification.replacements {section.replacements!r} "
                                 "is not a file of the version")
            self.replacements = TextReplacements.from_file(table)
        self.max_tokens = model.manifest.spec.limits.max_tokens or 256
        self.pad_id, self.unk_id = special.pad_id, special.unk_id
        self.unk_token = special.unk if special.unk is not None else model.tokenizer.id_to_token(special.unk_id) or ""

    def estimate_tokens(self, text: str) -> int:
        """A cheap guess of the token count, for grouping texts of similar length into one batch.

        About 4 characters per subword on these vocabularies; exact counts would mean tokenizing twice.
        """
        return min(self.max_tokens, len(text) // 4 + 1)

    def _row(self, encoding: object, normalised: Normalised | None = None,
             ) -> tuple[list[int], list[str], list[tuple[int, int]], list[bool], bool]:
        """One text's ids, tokens, offsets (in the text as sent), which positions are answered (not
        special) and truncation. `normalised`: the rewritten text the encoding was made from."""
        ids, tokens, offsets = list(encoding.ids), list(encoding.tokens), list(encoding.offsets)  # type: ignore[attr-defined]
        if normalised is not None:
            offsets = [normalised.original_span(start, end) for start, end in offsets]
        shown = [not s for s in encoding.special_tokens_mask] if self.add_special_tokens else [True] * len(ids)  # type: ignore[attr-defined]
        truncated = len(ids) > self.max_tokens
        if truncated and self.add_special_tokens:
            # Keep the closing special token ([SEP]) the encoder was trained to see.
            keep = self.max_tokens - 1
            ids, tokens, offsets, shown = (ids[:keep] + ids[-1:], tokens[:keep] + tokens[-1:],
                                           offsets[:keep] + offsets[-1:], shown[:keep] + shown[-1:])
        else:
            ids, tokens, offsets, shown = (ids[: self.max_tokens], tokens[: self.max_tokens],
                                           offsets[: self.max_tokens], shown[: self.max_tokens])
        if not any(shown):  # a text the normaliser empties still gets one position to attend to
            position = 1 if self.add_special_tokens and ids else 0
            ids.insert(position, self.unk_id)
            tokens.insert(position, self.unk_token)
            offsets.insert(position, (0, 0))
            shown.insert(position, True)
        return ids, tokens, offsets, shown, truncated

    def __call__(self, texts: Sequence[str], timings: StageTimings | None = None) -> list[ClassPrediction]:
        timings = timings or StageTimings()
        with timings.stage("tokenize"):
            if self.replacements is not None:
                normalised = [self.replacements.normalise(text) for text in texts]
                encodings = self.tokenizer.encode_batch([n.text for n in normalised],
                                                        add_special_tokens=self.add_special_tokens)
                rows = [self._row(encoding, n) for encoding, n in zip(encodings, normalised, strict=True)]
            else:
                encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=self.add_special_tokens)
                rows = [self._row(encoding) for encoding in encodings]
            width = max(len(r[0]) for r in rows)
            input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            attention_mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, (ids, *_) in enumerate(rows):
                input_ids[i, : len(ids)] = ids
                attention_mask[i, : len(ids)] = 1
            # Share of the tensor that is padding: what length grouping in the batcher keeps down.
            timings.padding_ratio = 1.0 - float(attention_mask.sum()) / attention_mask.size
        with timings.stage("inference"):
            # A dynamically quantized graph is handed one text at a time (service/batching/runs.py).
            probabilities, attention = self.model.session.run(
                ["probabilities", "attention"], {"input_ids": input_ids, "attention_mask": attention_mask}
            )
        with timings.stage("postprocess"):
            predictions = []
            for i, (_, tokens, offsets, shown, truncated) in enumerate(rows):
                probs = probabilities[i]
                weights = attention[i, : len(tokens)]
                predictions.append(
                    ClassPrediction(
                        label=self.labels[int(np.argmax(probs))],
                        probabilities={label: float(p) for label, p in zip(self.labels, probs, strict=True)},
                        truncated=truncated,
                        token_parts=TokenParts(tuple(tokens), tuple(weights.tolist()), tuple(offsets), tuple(shown)),
                    )
                )
        return predictions
