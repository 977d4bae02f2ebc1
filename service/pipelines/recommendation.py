"""Next-item recommendation: item history -> onnxruntime (SASRec) -> top-k items and attention over the history.

The server and the evaluation command both call this class, so published quality is served quality.
Top-k happens here with numpy rather than inside the graph: excluding seen items and a per-request k
would need extra graph inputs, the sampled-negatives evaluation needs the full score vector anyway,
and argpartition over a few thousand scores costs microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.model.loaded_model import LoadedModel
from service.model.pipeline import Pipeline
from service.model.timing import StageTimings
from service.pipelines.item_catalogue import CatalogueItem, ItemCatalogue

TASK = "recommendation"
# A graph with a co-occurrence term (EASE over the whole history, beside SASRec over its last max_history
# items) has this third input: every distinct item of the request's history, not cut.
WHOLE_HISTORY = "whole_history"


def pad_whole_histories(histories: Sequence[Sequence[int]]) -> np.ndarray:
    """[B, M] int64: each history's distinct items in first-seen order, right-padded with 0 (the
    co-occurrence term counts an item once however often the history repeats it)."""
    distinct = [list(dict.fromkeys(h)) for h in histories]
    padded = np.zeros((len(distinct), max(1, max(len(d) for d in distinct))), dtype=np.int64)
    for row, items in enumerate(distinct):
        padded[row, : len(items)] = items
    return padded


@dataclass(frozen=True)
class RecommendationRequest:
    history: tuple[int, ...]  # known item ids, oldest first (validated by the caller)
    k: int
    exclude_seen: bool


@dataclass(frozen=True)
class ScoredItem:
    item: CatalogueItem
    score: float


@dataclass(frozen=True)
class Recommendation:
    items: list[ScoredItem]  # best first
    attention: list[float]  # over history[first_used:], oldest first; empty for a fallback
    first_used: int  # index in the request history of the first item the model read
    fallback: bool  # empty history: the most popular items
    truncated: bool  # the history was longer than max_history


class RecommendationPipeline(Pipeline[RecommendationRequest, Recommendation]):
    def __init__(self, model: LoadedModel) -> None:
        if model.task != TASK:
            raise ValueError(f"model {model.name} is not a recommendation model")
        self.model = model
        catalogue, limits = model.manifest.spec.catalogue, model.manifest.spec.limits
        if catalogue is None or catalogue.popularity is None or limits.max_history is None or limits.max_k is None:
            raise ValueError(f"model {model.name}: a recommendation manifest needs catalogue.items, "
                             "catalogue.popularity, limits.max_history and limits.max_k")
        self.catalogue = ItemCatalogue.from_files(model.manifest.path(catalogue.items),
                                                  model.manifest.path(catalogue.popularity))
        self.max_history = limits.max_history
        self.max_k = limits.max_k
        self.reads_whole_history = WHOLE_HISTORY in {i.name for i in model.session.get_inputs()}
        # A tiny first run so the first served call does not pay onnxruntime's lazy initialisation.
        self.score([[1]])

    def estimate_tokens(self, request: RecommendationRequest) -> int:
        """The history length the model reads: the batcher groups similar lengths to limit padding."""
        return max(1, min(len(request.history), self.max_history))

    def score(self, histories: Sequence[Sequence[int]],
              timings: StageTimings | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores [B, N] (column j = item id j + 1) and attention [B, T] for non-empty histories. SASRec
        reads each history cut to its most recent max_history items (attention rows are 0 past each
        history's end); a co-occurrence term, when the graph has one, reads the whole history."""
        timings = timings or StageTimings()
        used = [list(h[-self.max_history:]) for h in histories]
        lengths = np.array([len(h) for h in used], dtype=np.int64)
        padded = np.zeros((len(used), int(lengths.max())), dtype=np.int64)
        for row, history in enumerate(used):
            padded[row, : len(history)] = history
        timings.padding_ratio = 1.0 - float(lengths.sum()) / padded.size
        whole = pad_whole_histories(histories) if self.reads_whole_history else None
        with timings.stage("inference"):
            # A dynamically quantized graph is handed one request at a time (service/batching/runs.py).
            scores, attention = self.model.session.run(["scores", "attention"], self._feeds(padded, lengths, whole))
        return scores, attention

    @staticmethod
    def _feeds(history: np.ndarray, lengths: np.ndarray, whole: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {"history": history, "lengths": lengths}
        if whole is not None:
            feeds[WHOLE_HISTORY] = whole
        return feeds

    def fallback(self, k: int) -> Recommendation:
        items = [ScoredItem(self.catalogue.get(i), share) for i, share in self.catalogue.popular[:k]]
        return Recommendation(items, [], 0, fallback=True, truncated=False)

    def __call__(self, requests: Sequence[RecommendationRequest],
                 timings: StageTimings | None = None) -> list[Recommendation]:
        timings = timings or StageTimings()
        results: list[Recommendation | None] = [None] * len(requests)
        modelled = [i for i, r in enumerate(requests) if r.history]
        for i, request in enumerate(requests):
            if not request.history:
                results[i] = self.fallback(request.k)
        if modelled:
            scores, attention = self.score([requests[i].history for i in modelled], timings)
            with timings.stage("postprocess"):
                for row, i in enumerate(modelled):
                    results[i] = self._top_k(requests[i], scores[row], attention[row])
        return [r for r in results if r is not None]

    def _top_k(self, request: RecommendationRequest, scores: np.ndarray, attention: np.ndarray) -> Recommendation:
        scores = scores.astype(np.float64)
        if request.exclude_seen:
            scores[np.asarray(request.history, dtype=np.int64) - 1] = -np.inf
        k = min(request.k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
        top = top[np.lexsort((top, -scores[top]))]  # best first, ties by id
        used = min(len(request.history), self.max_history)
        return Recommendation(
            items=[ScoredItem(self.catalogue.get(int(j) + 1), float(scores[j])) for j in top],
            attention=[float(w) for w in attention[:used]],
            first_used=len(request.history) - used,
            fallback=False,
            truncated=len(request.history) > self.max_history,
        )
