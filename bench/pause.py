"""Pause the background training jobs for a full benchmark run, and always resume them.

SIGSTOP/SIGCONT, never a kill: the jobs lose nothing but wall time. Resuming happens in `finally`,
and SIGTERM/SIGINT are turned into exceptions so that `finally` runs when the bench is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

# The jobs that share the machine (issue 7's brief); matched against full command lines: every
# `python -m training.train_<task>` (and scripts importing one), and the NER repeated-splits runs.
TRAINING_PATTERNS = ("training.train_", "training.ner_repeated_splits")


def training_pids() -> list[int]:
    pids: list[int] = []
    for pattern in TRAINING_PATTERNS:
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout
        pids += [int(p) for p in out.split() if int(p) != os.getpid()]
    return sorted(set(pids))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def training_paused(enabled: bool) -> Iterator[list[int]]:
    """Yields the pids paused (empty if disabled or none run)."""
    pids = training_pids() if enabled else []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    stopped: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        signal.signal(signal.SIGTERM, previous)
