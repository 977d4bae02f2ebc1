"""Per-stage wall-clock timings of one pipeline call (tokenize / inference / post-process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimings:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.padding_ratio: float | None = None  # set by pipelines that pad a batch

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
