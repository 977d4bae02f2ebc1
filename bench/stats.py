"""Per-run statistics and their medians over repeated runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.loadgen import LoadResult


@dataclass(frozen=True)
class RunStats:
    throughput: float   # OK calls per second of wall time
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int
    server_cpu_ms: float = float("nan")   # server CPU time per OK call (all its processes)
    client_cpu_share: float = float("nan")  # load client CPU time / wall time (1.0 = one core busy)


def run_stats(result: LoadResult, server_cpu_seconds: float = float("nan")) -> RunStats:
    latencies = np.asarray(result.latencies_ms) if result.latencies_ms else np.asarray([float("nan")])
    return RunStats(
        throughput=result.throughput, p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)), ok=result.ok, failed=result.failed,
        server_cpu_ms=server_cpu_seconds * 1000 / result.ok if result.ok else float("nan"),
        client_cpu_share=result.client_cpu_seconds / result.wall_seconds if result.wall_seconds else float("nan"),
    )


def latency_stats(latencies_ms: Sequence[float]) -> RunStats:
    """For the in-process baseline: one call after another, so throughput is 1 / mean latency."""
    array = np.asarray(latencies_ms)
    return RunStats(throughput=1000.0 / float(array.mean()), p50_ms=float(np.percentile(array, 50)),
                    p99_ms=float(np.percentile(array, 99)), ok=len(array), failed=0)


@dataclass(frozen=True)
class Summary:
    """Medians over repeated runs (each run's own p50 and p99), plus the spread of throughput."""

    throughput: float
    p50_ms: float
    p99_ms: float
    runs: int
    calls: int
    failed: int
    throughput_min: float
    throughput_max: float
    server_cpu_ms: float = float("nan")
    client_cpu_share: float = float("nan")


def summarize(runs: Sequence[RunStats]) -> Summary:
    return Summary(
        throughput=statistics.median(r.throughput for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        runs=len(runs), calls=sum(r.ok + r.failed for r in runs), failed=sum(r.failed for r in runs),
        throughput_min=min(r.throughput for r in runs), throughput_max=max(r.throughput for r in runs),
        server_cpu_ms=statistics.median(r.server_cpu_ms for r in runs),
        client_cpu_share=statistics.median(r.client_cpu_share for r in runs),
    )
