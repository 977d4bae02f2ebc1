"""What the batcher, the registry and the servicers know of a task pipeline: a callable over a batch of
requests that returns one result each, with an estimate of each request's size in tokens.

`Pipeline[RequestT, ResultT]`: sentiment and NER take texts, translation `TranslationRequest`s,
recommendation `RecommendationRequest`s, V2 raw-tensor calls `Row`s. A pipeline whose runs can take
seconds (translation) is a `StoppablePipeline`: it also takes one stop signal per item, checked as it
works, and a hook to call between its bounded chunks; an item whose signal fired gets None. A pipeline
that can also be run one decoder step at a time (translation) is a `ScheduledPipeline`: it plans a batch
as `StepWork` units that a scheduler advances interleaved with other batches' (service/batching/
step_scheduler.py, docs/serving.md "Iteration-level scheduling").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard, TypeVar

from service.model.loaded_model import LoadedModel
from service.model.timing import StageTimings

# Requests are only handed in (contravariant); results come back in a list (invariant).
RequestT = TypeVar("RequestT", contravariant=True)
ResultT = TypeVar("ResultT")
ResultT_co = TypeVar("ResultT_co", covariant=True)

Stop = Callable[[], bool]  # true once the item's call is cancelled or past its deadline


class Pipeline(Protocol[RequestT, ResultT]):
    model: LoadedModel

    def __call__(self, items: Sequence[RequestT], timings: StageTimings | None = None) -> list[ResultT]: ...

    def estimate_tokens(self, item: RequestT) -> int: ...


class StoppablePipeline(Protocol[RequestT, ResultT]):
    model: LoadedModel
    takes_stop_signals: bool  # the marker the batcher reads (is_stoppable)

    def __call__(
        self, items: Sequence[RequestT], timings: StageTimings | None = None,
        stops: Sequence[Stop] | None = None, between_chunks: Callable[[], None] | None = None,
    ) -> list[ResultT | None]: ...

    def estimate_tokens(self, item: RequestT) -> int: ...


def is_stoppable(pipeline: object) -> TypeGuard[StoppablePipeline[Any, Any]]:
    return bool(getattr(pipeline, "takes_stop_signals", False))


class StepWork(Protocol[ResultT_co]):
    """Items of one planned batch that decode together, a step at a time: `start` once (False: every
    item's call has gone, nothing to run), then `advance` (the encoder first, then one decoder step per
    call) until `finished`, then `results` (by position in the planned items; a stopped item has none)."""

    items: Sequence[int]   # positions in the items handed to plan()
    bytes: int             # estimated working memory while it decodes

    @property
    def finished(self) -> bool: ...

    def start(self, stops: Sequence[Stop]) -> bool: ...

    def advance(self) -> None: ...

    def results(self) -> Mapping[int, ResultT_co]: ...


class ScheduledPipeline(StoppablePipeline[RequestT, ResultT], Protocol):
    """A stoppable pipeline whose batches can also be planned as StepWork, for the step scheduler.
    Planned and run to the end one unit after the other, the units give exactly what __call__ gives."""

    schedules_steps: bool  # the marker the batcher reads (is_scheduled)
    chunk_bytes: int       # the working memory one unit is planned within (one item may exceed it alone)

    def plan(self, items: Sequence[RequestT], items_per_run: int,
             timings: StageTimings | None = None) -> Sequence[StepWork[ResultT]]: ...


def is_scheduled(pipeline: object) -> TypeGuard[ScheduledPipeline[Any, Any]]:
    return is_stoppable(pipeline) and bool(getattr(pipeline, "schedules_steps", False))


# Any task's pipeline, as the registry holds it (its request and result types are the servicer's business).
AnyPipeline = Pipeline[Any, Any] | StoppablePipeline[Any, Any]
