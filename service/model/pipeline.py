"""What the batcher, the registry and the servicers know of a task pipeline: a callable over a batch of
requests that returns one result each, with an estimate of each request's size in tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from service.model.loaded_model import LoadedModel
from service.model.timing import StageTimings


class Pipeline(Protocol):
    model: LoadedModel

    # Items are texts, or task-specific requests carrying a text (translation: text + decoding options).
    def __call__(self, texts: Sequence[Any], timings: StageTimings | None = None) -> list[Any]: ...

    def estimate_tokens(self, text: Any) -> int: ...
