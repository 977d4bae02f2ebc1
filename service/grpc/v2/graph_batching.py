"""V2 ModelInfer through the dynamic batcher: raw-tensor calls on one graph, stacked along the batch axis.

Task calls are padded to a common length by their pipeline, which knows each input's padding value.
A raw tensor's right padding value is not known from the graph, so raw calls are never padded: a call
is split into rows, and rows only share a batch with rows of the same group (same graph, same
per-row shapes and datatypes, same requested outputs). Such rows stack without padding, run once,
and are split back: the same numbers as running each call alone, fewer model runs.

Graphs qualify when every input and every output has the same symbolic first dimension (the batch
axis) and the graph is not dynamically quantized (its activation scales span the whole batch tensor, so
stacking would change the numbers); others (or calls of zero rows) run as sent. A call reaches
split_rows only after every input was checked to have the same batch size (shapes.py): rows cut from
inputs of different sizes were empty tensors, which abort onnxruntime's GRU (issue #16).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from service.grpc.v2.shapes import row_positions
from service.model.loaded_model import LoadedModel
from service.model.pipeline import Pipeline
from service.model.timing import StageTimings


@dataclass(frozen=True)
class Row:
    """One row of a call: every input sliced to batch length 1, and the outputs the call wants."""

    feeds: dict[str, np.ndarray]
    outputs: tuple[str, ...]


def batch_axis(session: ort.InferenceSession) -> str | None:
    """The symbolic first dimension shared by every input and output of the graph, or None."""
    first = {str(arg.shape[0]) if arg.shape and isinstance(arg.shape[0], str) else None
             for arg in [*session.get_inputs(), *session.get_outputs()]}
    if len(first) != 1:
        return None
    (name,) = first
    return name


def split_rows(feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> list[Row]:
    rows = next(iter(feeds.values())).shape[0]
    return [Row({name: array[i:i + 1] for name, array in feeds.items()}, tuple(outputs)) for i in range(rows)]


def row_group(graph: str, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> Hashable:
    """Rows of equal groups stack without padding."""
    return (graph, tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(feeds.items())),
            tuple(outputs))


def join_rows(rows: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]) -> list[np.ndarray]:
    return [np.concatenate([row[name] for row in rows]) for name in outputs]


RowResult = dict[str, np.ndarray] | Exception  # a row's outputs, or what running it alone raised


class GraphPipeline(Pipeline[Row, RowResult]):
    """The batcher's pipeline for one graph: its items are Rows, its outputs one dict per row (or the
    exception that row raised when run alone)."""

    def __init__(self, model: LoadedModel, session: ort.InferenceSession) -> None:
        self.model = model
        self.session = session
        self._dims = {arg.name: list(arg.shape) for arg in session.get_inputs()}

    def estimate_tokens(self, row: Row) -> int:
        # Nothing is padded (rows of one group have one shape), but the batch's size still has to stay
        # within the model's token budget: a row counts the positions it spans (shapes.py), so calls of
        # long rows do not stack into one run of max_batch_size times their length.
        return max(1, max(row_positions(array.shape, self._dims.get(name, ())) for name, array in row.feeds.items()))

    def __call__(
        self, rows: Sequence[Row], timings: StageTimings | None = None
    ) -> list[RowResult]:
        timings = timings or StageTimings()
        outputs = list(rows[0].outputs)
        feeds = {name: np.concatenate([row.feeds[name] for row in rows]) for name in rows[0].feeds}
        try:
            with timings.stage("inference"):
                arrays = self.session.run(outputs, feeds)
        except Exception as exc:
            if len(rows) == 1:
                return [exc]
            # One call's bad values (say a token id out of range) must not fail the calls it was
            # batched with: run the rows alone, and only the bad ones carry the error.
            return [self([row], timings)[0] for row in rows]
        if any(np.asarray(a).shape[:1] != (len(rows),) for a in arrays):
            if len(rows) == 1:
                return [ValueError("an output does not have the batch axis its signature declares")]
            return [self([row], timings)[0] for row in rows]
        return [{name: np.asarray(a)[i:i + 1] for name, a in zip(outputs, arrays, strict=True)}
                for i in range(len(rows))]
