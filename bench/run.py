"""One benchmark run: start the servers, measure every scenario side by side, stop everything."""

from __future__ import annotations

import os
import pathlib
import tempfile
import time
from dataclasses import dataclass, field

from bench.client import LoadClient
from bench.endpoints import FACTORIES, sentiment_task, sentiment_v2
from bench.floor import floor_sweep, floor_targets, model_cpu_ms
from bench.machine import describe
from bench.pause import training_paused
from bench.peer.echo import start_echo
from bench.peer.mlserver import install_hint, mlserver_available, start_mlserver
from bench.scenarios import (
    QUICK,
    WORKER_CHANNELS,
    Outcome,
    OverheadRow,
    Plan,
    Target,
    VariantSpeed,
    cold_starts,
    overhead,
    sweep,
    variant_speed,
    worker_scaling,
)
from bench.servers import REPO, Server, start_seqserve, start_seqserve_workers
from bench.stats import Summary
from bench.texts import SENTENCES
from bench.translation_bench import FULL_DECODING, QUICK_DECODING, DecodingResults, run_decoding
from bench.translation_scheduling import (
    FULL_SCHEDULING,
    FULL_VERSUS_CT2,
    QUICK_SCHEDULING,
    QUICK_VERSUS_CT2,
    SchedulingResults,
    run_scheduling,
)

EXPORTED = REPO / "exported"
# Batching off: one call per batch, no waiting for company (service/config.py's batching flags).
BATCHING_OFF = ("--max-batch-size", "1", "--max-queue-delay-ms", "0")

ON, OFF, V2, PEER, INT8 = (
    "seqserve task API, batching on", "seqserve task API, batching off", "seqserve V2 ModelInfer",
    "MLServer V2 ModelInfer, adaptive batching", "seqserve task API int8, batching on",
)
ONE_WORKER, TWO_WORKERS = "seqserve --workers 1 (default)", "seqserve --workers 2"


def newest(model: str) -> pathlib.Path:
    return max((p for p in (EXPORTED / model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@dataclass
class BenchResults:
    plan: Plan
    machine: dict[str, object]
    paused: list[int]
    overhead: list[OverheadRow]
    sweeps: dict[str, dict[int, Summary]]
    variants: list[VariantSpeed]
    cold: list[tuple[float, int]]
    rss: dict[str, int]
    peer_note: str
    outcome: Outcome
    extra_endpoints: list[str] = field(default_factory=list)
    seconds: float = 0.0
    decoding: DecodingResults | None = None  # section 4: translation decoding engines side by side
    workers: dict[str, Summary] = field(default_factory=dict)  # section 7: 1 vs 2 server processes
    floor: dict[str, dict[int, Summary]] = field(default_factory=dict)  # section 8: vs a bare grpc.aio echo
    floor_model_ms: float | None = None  # section 8: the model's in-process CPU ms per call
    scheduling: SchedulingResults | None = None  # section 9: translation, iteration-level vs batch at a time


def _stop_all(servers: list[Server], outcome: Outcome) -> None:
    for server in servers:
        code = server.stop()
        if code != 0:
            outcome.errors.append(f"{server.name} exited with {code}")


def run_bench(plan: Plan, peer: bool, pause_training: bool) -> BenchResults:
    began = time.monotonic()
    fp32, int8 = newest("sentiment-bigru"), newest("sentiment-bigru-int8")
    outcome = Outcome()
    with training_paused(pause_training) as paused, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        log_dir = pathlib.Path(tmp)
        machine = describe(exclude={os.getpid()})
        servers: list[Server] = []
        try:
            on = start_seqserve("batching-on", EXPORTED, log_dir)
            servers.append(on)
            off = start_seqserve("batching-off", EXPORTED, log_dir, BATCHING_OFF)
            servers.append(off)
            rss = {"seqserve, all models loaded, idle": on.rss()}
            peer_server, peer_note = None, ""
            if peer and mlserver_available():
                peer_server = start_mlserver("sentiment-bigru", fp32 / "model.onnx", log_dir)
                servers.append(peer_server)
                rss["MLServer (all processes), one model, idle"] = peer_server.rss()
            elif peer:
                peer_note = f"MLServer is not installed; install it with `{install_hint()}`"
            else:
                peer_note = "peer comparison not run (quick mode or --no-peer)"
            # Label and probabilities only (omit_tokens): the cheap form a caller counting calls/s asks for.
            task = sentiment_task(fp32, SENTENCES, "sentiment-bigru", omit_tokens=True)
            v2 = sentiment_v2(fp32, SENTENCES, "sentiment-bigru")
            extra = [e for e in (f(EXPORTED, SENTENCES) for f in FACTORIES.values()) if e is not None]
            with LoadClient() as client:
                rows = overhead(client, [Target(ON, on, task), Target(OFF, off, task), Target(V2, on, v2),
                                         *(Target(e.name, on, e) for e in extra)], plan, outcome)
                targets = [Target(ON, on, task), Target(OFF, off, task), Target(V2, on, v2),
                           Target(INT8, on, sentiment_task(int8, SENTENCES, "sentiment-bigru-int8", omit_tokens=True)),
                           *(Target(e.name, on, e) for e in extra)]
                if peer_server is not None:
                    targets.append(Target(PEER, peer_server, sentiment_v2(fp32, SENTENCES, "sentiment-bigru", "V2")))
                sweeps = sweep(client, targets, plan, outcome)
            rss["seqserve, all models loaded, after the load runs"] = on.rss()
            if peer_server is not None:
                rss["MLServer (all processes), after the load runs"] = peer_server.rss()
            echo = start_echo(log_dir)
            servers.append(echo)
            with LoadClient() as client:
                floor = floor_sweep(client, floor_targets([(ON, on, task)], echo), plan, outcome)
            echo.stop()
            # Started only now, so the other sections never share the cores with its two workers.
            two = start_seqserve_workers("workers-2", EXPORTED, log_dir, 2)
            servers.append(two)
            rss["seqserve --workers 2 (supervisor + 2 workers), idle"] = two.rss()
            with LoadClient() as client:
                workers = worker_scaling(client, [Target(ONE_WORKER, on, task, WORKER_CHANNELS),
                                                  Target(TWO_WORKERS, two, task, WORKER_CHANNELS)], plan, outcome)
            rss["seqserve --workers 2 (supervisor + 2 workers), after the load runs"] = two.rss()
        finally:
            _stop_all(servers, outcome)
        floor_model_ms = model_cpu_ms(task, plan.overhead_calls, plan.reps) if floor else None
        variants = [variant_speed(fp32, SENTENCES, plan), variant_speed(int8, SENTENCES, plan)]
        cold = cold_starts(EXPORTED, log_dir, plan.cold_starts)
        # After every server has stopped: the decoding engines get the cores to themselves.
        decoding = run_decoding(QUICK_DECODING if plan is QUICK else FULL_DECODING)
        outcome.errors += decoding.errors
        scheduling = run_scheduling(*((QUICK_SCHEDULING, QUICK_VERSUS_CT2) if plan is QUICK
                                      else (FULL_SCHEDULING, FULL_VERSUS_CT2)))
        outcome.errors += scheduling.errors
    return BenchResults(plan, machine, paused, rows, sweeps, variants, cold, rss, peer_note, outcome,
                        [e.name for e in extra], time.monotonic() - began, decoding, workers, floor, floor_model_ms,
                        scheduling)
