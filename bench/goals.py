"""Issue 7's goals, evaluated on the measured figures: each one says met or not met, with the numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.scenarios import OverheadRow
from bench.stats import Summary

OVERHEAD_LIMIT = 1.3
BATCHING_SPEEDUP = 4.0
BATCHING_P99_MS = 100.0
PEER_SPEEDUP = 2.0
PEER_P99_SHARE = 0.5
# Issue #20: seqserve against a bare grpc.aio echo (the Python gRPC floor), Sentiment.Analyze, one short text.
FLOOR_THROUGHPUT_SHARE = 0.6   # of the echo's calls/s at 64 in flight
FLOOR_CPU_RATIO = 2.0          # times the echo's server CPU per call at 1 in flight


@dataclass(frozen=True)
class Goal:
    goal: str
    measured: str
    met: bool


def overhead_goals(rows: Sequence[OverheadRow]) -> list[Goal]:
    return [
        Goal(f"served/raw <= {OVERHEAD_LIMIT}x at batch 1: {row.server}",
             f"{row.ratio_p50:.2f}x at p50 ({row.served.p50_ms:.2f} vs {row.raw.p50_ms:.2f} ms), "
             f"{row.ratio_p99:.2f}x at p99", row.ratio_p50 <= OVERHEAD_LIMIT)
        for row in rows
    ]


def batching_goal(on: Summary, off: Summary, clients: int) -> Goal:
    speedup = on.throughput / off.throughput
    return Goal(
        f"batching on >= {BATCHING_SPEEDUP:.0f}x throughput at {clients} clients, p99 <= {BATCHING_P99_MS:.0f} ms",
        f"{speedup:.2f}x ({on.throughput:.0f} vs {off.throughput:.0f} calls/s), p99 {on.p99_ms:.1f} ms",
        speedup >= BATCHING_SPEEDUP and on.p99_ms <= BATCHING_P99_MS,
    )


def peer_goal(label: str, ours: Summary, peer: Summary, clients: int) -> Goal:
    speedup = ours.throughput / peer.throughput
    share = ours.p99_ms / peer.p99_ms
    return Goal(
        f">= {PEER_SPEEDUP:.0f}x MLServer throughput at <= {PEER_P99_SHARE} of its p99 ({label}, {clients} clients)",
        f"{speedup:.2f}x throughput ({ours.throughput:.0f} vs {peer.throughput:.0f} calls/s), "
        f"p99 {share:.2f} of MLServer's ({ours.p99_ms:.1f} vs {peer.p99_ms:.1f} ms)",
        speedup >= PEER_SPEEDUP and share <= PEER_P99_SHARE,
    )


def floor_goals(ours: dict[int, Summary], echo: dict[int, Summary]) -> list[Goal]:
    top, one = max(ours), min(ours)
    share = ours[top].throughput / echo[top].throughput
    cpu = ours[one].server_cpu_ms / echo[one].server_cpu_ms
    return [
        Goal(f">= {FLOOR_THROUGHPUT_SHARE} of the bare grpc.aio echo's calls/s at {top} in flight",
             f"{share:.2f} ({ours[top].throughput:.0f} vs {echo[top].throughput:.0f} calls/s)",
             share >= FLOOR_THROUGHPUT_SHARE),
        Goal(f"<= {FLOOR_CPU_RATIO:.0f}x the echo's server CPU per call at {one} in flight",
             f"{cpu:.2f}x ({ours[one].server_cpu_ms:.3f} vs {echo[one].server_cpu_ms:.3f} ms)",
             cpu <= FLOOR_CPU_RATIO),
    ]
