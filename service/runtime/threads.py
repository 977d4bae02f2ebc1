"""How many CPU threads this process may use: CPU affinity, capped by a cgroup CPU quota.

os.cpu_count() reports the host's cores, not the container's share; onnxruntime sized from it
oversubscribes a pod limited to 2 CPUs on a 64-core node and runs many times slower.
"""

from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: pathlib.Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, else v1 cfs), or None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadBudget:
    total: int            # onnxruntime threads for all models together
    per_session: int      # intra-op threads of each session
    allow_spinning: bool  # always False today; see thread_budget
    source: str           # how total was decided, for the start-up log


def cpu_budget(root: pathlib.Path = CGROUP_ROOT) -> tuple[int, str]:
    """(CPUs this server may use, how that was decided): affinity, capped by the cgroup quota."""
    quota = cgroup_cpu_quota(root)
    cpus = affinity_cpus()
    total = max(1, min(cpus, math.floor(quota))) if quota is not None else cpus
    return total, f"affinity {cpus}" + (f", cgroup quota {quota:g}" if quota is not None else "")


def thread_budget(override: int, concurrent_batches: int, root: pathlib.Path = CGROUP_ROOT,
                  processes: int = 1) -> ThreadBudget:
    """One budget shared by every model: at most `concurrent_batches` sessions run at once (one per
    inference worker), so each gets total // concurrent_batches intra-op threads.

    With `processes` server workers (--workers) the budget is the whole server's: each worker gets
    total // processes (at least 1), so workers x threads never oversubscribes the CPUs."""
    if override > 0:
        total, source = override, "--threads"
    else:
        total, source = cpu_budget(root)
    if processes > 1:
        total, source = max(1, total // processes), f"{source}, shared by {processes} workers"
    per_session = max(1, total // max(1, concurrent_batches))
    # Spinning off: under a quota spinning threads eat the quota itself, and without one the cores
    # are shared with the event loop and the other models' batches.
    return ThreadBudget(total=total, per_session=per_session, allow_spinning=False, source=source)
