"""What the batcher, the registry and the servicers know of a task pipeline: a callable over a batch of
requests that returns one result each, with an estimate of each request's size in tokens.

`Pipeline[RequestT, ResultT]`: sentiment and NER take texts, translation `TranslationRequest`s,
recommendation `RecommendationRequest`s, V2 raw-tensor calls `Row`s. A pipeline whose runs can take
seconds (translation) is a `StoppablePipeline`: it also takes one stop signal per item, checked as it
works, and a hook to call between its bounded chunks; an item whose signal fired gets None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeGuard, TypeVar

from service.model.loaded_model import LoadedModel
from service.model.timing import StageTimings

# Requests are only handed in (contravariant); results come back in a list (invariant).
RequestT = TypeVar("RequestT", contravariant=True)
ResultT = TypeVar("ResultT")

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


# Any task's pipeline, as the registry holds it (its request and result types are the servicer's business).
AnyPipeline = Pipeline[Any, Any] | StoppablePipeline[Any, Any]
