"""Sentiment: tokenize -> onnxruntime -> labels, probabilities and attention over tokens.

The server and the evaluation command both call this class, so published quality is served quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.model.loaded_model import LoadedModel
from service.model.pipeline import Pipeline
from service.model.timing import StageTimings

TASK = "sentiment"


@dataclass(frozen=True)
class TokenWeight:
    token: str
    weight: float
    start: int
    end: int


@dataclass(frozen=True)
class SentimentPrediction:
    label: str
    probabilities: dict[str, float]  # in the model's label order
    tokens: list[TokenWeight]
    truncated: bool


class SentimentPipeline(Pipeline[str, "SentimentPrediction"]):
    def __init__(self, model: LoadedModel) -> None:
        if model.task != TASK or model.tokenizer is None:
            raise ValueError(f"model {model.name} is not a sentiment model with a tokenizer")
        self.model = model
        self.labels = model.manifest.labels
        special = model.manifest.spec.special_tokens
        if special is None:
            raise ValueError(f"model {model.name} has no special_tokens section")
        self.max_tokens = model.manifest.spec.limits.max_tokens or 256
        self.pad_id, self.unk_id = special.pad_id, special.unk_id
        self.unk_token = special.unk if special.unk is not None else model.tokenizer.id_to_token(special.unk_id) or ""

    def estimate_tokens(self, text: str) -> int:
        """A cheap guess of the token count, for grouping texts of similar length into one batch.

        About 4 characters per subword on this vocabulary; exact counts would mean tokenizing twice.
        """
        return min(self.max_tokens, len(text) // 4 + 1)

    def __call__(
        self, texts: Sequence[str], timings: StageTimings | None = None
    ) -> list[SentimentPrediction]:
        timings = timings or StageTimings()
        with timings.stage("tokenize"):
            encodings = self.model.tokenizer.encode_batch(list(texts), add_special_tokens=False)
            rows = []
            for encoding in encodings:
                ids, tokens, offsets = encoding.ids, encoding.tokens, encoding.offsets
                truncated = len(ids) > self.max_tokens
                ids, tokens, offsets = ids[: self.max_tokens], tokens[: self.max_tokens], offsets[: self.max_tokens]
                if not ids:  # a text the normaliser empties still gets one position to attend to
                    ids, tokens, offsets = [self.unk_id], [self.unk_token], [(0, 0)]
                rows.append((ids, tokens, offsets, truncated))
            width = max(len(r[0]) for r in rows)
            input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            attention_mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, (ids, _, _, _) in enumerate(rows):
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
            for i, (_, tokens, offsets, truncated) in enumerate(rows):
                probs = probabilities[i]
                predictions.append(
                    SentimentPrediction(
                        label=self.labels[int(np.argmax(probs))],
                        probabilities={label: float(p) for label, p in zip(self.labels, probs, strict=True)},
                        tokens=[
                            TokenWeight(tok, float(w), int(s), int(e))
                            for tok, w, (s, e) in zip(tokens, attention[i, : len(tokens)], offsets, strict=True)
                        ],
                        truncated=truncated,
                    )
                )
        return predictions
