"""Waiting for something that happens in another process (a server's metrics, its log): poll with a
deadline, and say what did not happen when it runs out. In-process tests synchronise with events."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_SECONDS = 0.02  # between two looks; short beside every timeout used with it


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Return as soon as `condition()` is truthy; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_SECONDS)
