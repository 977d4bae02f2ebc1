"""The measurements of issue 7, each a side-by-side comparison inside one run.

Repetitions are interleaved (every configuration once per round, the starting one rotated), so a
burst of background load hits all configurations alike instead of biasing one of them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.client import LoadClient
from bench.endpoints import Endpoint
from bench.loadgen import Call, LoadJob
from bench.servers import Server, start_seqserve
from bench.stats import RunStats, Summary, latency_stats, run_stats, summarize


@dataclass(frozen=True)
class Plan:
    reps: int                        # rounds; each figure is the median over them
    concurrencies: tuple[int, ...]
    run_seconds: float               # per load run (bounded by max_calls too)
    max_calls: int
    overhead_calls: int              # batch-1 calls per round in the overhead comparison
    cold_starts: int
    peer: bool


# Five rounds: on a shared machine a burst of someone else's work can spoil a round; the median of five
# shrugs off two. About five minutes in all.
FULL = Plan(reps=5, concurrencies=(1, 8, 64), run_seconds=2.5, max_calls=50_000, overhead_calls=300,
            cold_starts=3, peer=True)
QUICK = Plan(reps=1, concurrencies=(1, 8, 64), run_seconds=0.3, max_calls=120, overhead_calls=15,
             cold_starts=1, peer=False)


@dataclass(frozen=True)
class Target:
    """One configuration under load: a server and the endpoint called on it."""

    label: str
    server: Server
    endpoint: Endpoint
    channels: int = 1  # client connections; a --workers N server balances connections, not calls


@dataclass
class Outcome:
    """Everything failed calls and wrong answers are counted in, so the report can say so."""

    failed_calls: int = 0
    errors: list[str] = field(default_factory=list)


def load_run(client: LoadClient, target: Target, concurrency: int, plan: Plan, outcome: Outcome,
             max_calls: int | None = None, seconds: float | None = None) -> RunStats:
    calls = [Call(target.endpoint.method, r) for r in target.endpoint.requests]
    job = LoadJob(target=target.server.target, calls=calls, concurrency=concurrency,
                  max_calls=max_calls or plan.max_calls, max_seconds=seconds or plan.run_seconds,
                  channels=target.channels)
    cpu_before = target.server.cpu_seconds()
    result = client.run(job)
    server_cpu = target.server.cpu_seconds() - cpu_before
    if result.failed:
        outcome.failed_calls += result.failed
        outcome.errors.append(f"{target.label} at {concurrency}: {result.codes}")
    for response in result.responses:
        try:
            target.endpoint.check(response)
        except AssertionError as exc:
            outcome.errors.append(f"{target.label}: wrong answer {str(exc)[:200]}")
    return run_stats(result, server_cpu)


def sweep(client: LoadClient, targets: Sequence[Target], plan: Plan, outcome: Outcome) -> dict[str, dict[int, Summary]]:
    """Throughput and latency of every target at every concurrency, interleaved over plan.reps rounds."""
    for target in targets:  # warm-up: connections, onnxruntime's first shapes; discarded
        load_run(client, target, 8, plan, outcome, seconds=min(plan.run_seconds, 0.5))
    runs: dict[tuple[str, int], list[RunStats]] = {}
    for rep in range(plan.reps):
        for concurrency in plan.concurrencies:
            for i in range(len(targets)):
                target = targets[(i + rep) % len(targets)]
                runs.setdefault((target.label, concurrency), []).append(
                    load_run(client, target, concurrency, plan, outcome))
    table: dict[str, dict[int, Summary]] = {}
    for (label, concurrency), stats in runs.items():
        table.setdefault(label, {})[concurrency] = summarize(stats)
    return table


# Batch-1 comparisons stop after this long per round, so a slow endpoint (translation decodes for tens
# of milliseconds) costs seconds, not minutes.
OVERHEAD_SECONDS = 3.0


def time_in_process(endpoint: Endpoint, calls: int) -> RunStats:
    endpoint.raw(0)  # first-run cost out of the timing, as the server's warm-up does
    latencies = []
    stop = time.perf_counter() + OVERHEAD_SECONDS
    for i in range(calls):
        began = time.perf_counter()
        endpoint.raw(i)
        latencies.append((time.perf_counter() - began) * 1000)
        if began > stop:
            break
    return latency_stats(latencies)


@dataclass(frozen=True)
class OverheadRow:
    endpoint: str
    server: str
    raw: Summary      # onnxruntime in-process, same inputs
    served: Summary   # one call at a time through the server

    @property
    def ratio_p50(self) -> float:
        return self.served.p50_ms / self.raw.p50_ms

    @property
    def ratio_p99(self) -> float:
        return self.served.p99_ms / self.raw.p99_ms


def overhead(client: LoadClient, targets: Sequence[Target], plan: Plan, outcome: Outcome) -> list[OverheadRow]:
    """Batch 1, one call in flight: the served call vs the same work in-process, alternated per round."""
    raw: dict[str, list[RunStats]] = {}
    served: dict[str, list[RunStats]] = {}
    for _ in range(plan.reps):
        for target in targets:
            raw.setdefault(target.label, []).append(time_in_process(target.endpoint, plan.overhead_calls))
            served.setdefault(target.label, []).append(
                load_run(client, target, 1, plan, outcome, max_calls=plan.overhead_calls, seconds=OVERHEAD_SECONDS))
    return [OverheadRow(t.endpoint.name, t.label, summarize(raw[t.label]), summarize(served[t.label]))
            for t in targets]


@dataclass(frozen=True)
class VariantSpeed:
    name: str
    batch1: Summary    # in-process pipeline, one text
    batch32: Summary   # in-process pipeline, 32 texts in one call
    quality: dict[str, float]  # pooled test-split macro-F1 and accuracy from the manifest
    model_bytes: int


def variant_speed(version_dir: pathlib.Path, texts: Sequence[str], plan: Plan) -> VariantSpeed:
    from service.registry.loader import prepare_version

    pipeline = prepare_version(version_dir, intra_op_threads=1).pipeline
    if pipeline is None:  # a V2-only task: these variants are sentiment models, which always have one
        raise ValueError(f"{version_dir} has no task pipeline to time")
    batch = [texts[i % len(texts)] for i in range(32)]

    def timed(inputs: Sequence[str], calls: int) -> Summary:
        pipeline(inputs)
        runs = []
        for _ in range(plan.reps):
            latencies = []
            for _ in range(calls):
                began = time.perf_counter()
                pipeline(inputs)
                latencies.append((time.perf_counter() - began) * 1000)
            runs.append(latency_stats(latencies))
        return summarize(runs)

    manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
    pooled = manifest["metrics"]["served"]["pooled"]
    return VariantSpeed(
        name=f"{manifest['name']} v{manifest['version']}",
        batch1=timed([texts[0]], plan.overhead_calls), batch32=timed(batch, max(5, plan.overhead_calls // 4)),
        quality={"macro_f1": pooled["macro_f1"], "accuracy": pooled["accuracy"]},
        model_bytes=(version_dir / "model.onnx").stat().st_size,
    )


def cold_starts(model_dir: pathlib.Path, log_dir: pathlib.Path, count: int) -> list[tuple[float, int]]:
    """(seconds from spawn to health SERVING, RSS right then) of fresh servers on every model."""
    samples = []
    for i in range(count):
        server = start_seqserve(f"cold-{i}", model_dir, log_dir)
        samples.append((server.start_seconds, server.rss()))
        server.stop()
    return samples


# Section 7: one server process vs two (--workers 2) under the heaviest load of the sweep. Eight
# connections, for both: SO_REUSEPORT gives each connection to one worker, so one connection would
# measure one worker.
WORKER_CHANNELS = 8


def worker_scaling(client: LoadClient, targets: Sequence[Target], plan: Plan, outcome: Outcome) -> dict[str, Summary]:
    """calls/s and server CPU per call of each target at the plan's top concurrency, interleaved."""
    top = max(plan.concurrencies)
    table = sweep(client, targets, dataclasses.replace(plan, concurrencies=(top,)), outcome)
    return {label: by_concurrency[top] for label, by_concurrency in table.items()}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
