"""Section 8: seqserve against the Python gRPC floor (a bare grpc.aio echo, bench/peer/echo.py), issue #20.

The same load client sends the same Sentiment.Analyze request bytes to both, over FLOOR_CHANNELS
connections, at 1 and 64 calls in flight, the targets interleaved in every round. The echo does no work
of its own, so seqserve/echo is the share of the floor seqserve reaches (calls/s) and what its own
per-call work costs above it (server CPU per call).

`python -m bench floor [--baseline-code DIR]` runs only this comparison, optionally with a second
seqserve started from another source tree (a checkout of an earlier commit) for a before/after table.
"""

from __future__ import annotations

import dataclasses
import pathlib
import statistics
import tempfile
import time
from collections.abc import Sequence

from bench.client import LoadClient
from bench.endpoints import Endpoint
from bench.peer.echo import echo_endpoint, start_echo
from bench.scenarios import Outcome, Plan, Target, sweep
from bench.servers import REPO, Server, start_seqserve
from bench.stats import Summary

FLOOR_CHANNELS = 4   # as issue #20 measured: 64 calls in flight over 4 connections
FLOOR_CONCURRENCIES = (1, 64)
ECHO = "echo (bare grpc.aio, the floor)"
THIS_TREE = "seqserve (this tree)"


# `python -m bench floor --echo-variants`: the echo on other server designs (bench/peer/echo.py's modes), each
# against the plain aio echo in the same run: what a design choice costs at the floor itself.
ECHO_VARIANTS = (
    ("echo: grpc.aio + 3 pass-through interceptors", "interceptors", 2),
    ("echo: sync grpc server, 4 threads", "sync", 4),
    ("echo: sync grpc server, 16 threads", "sync", 16),
    ("echo: grpc.aio, each batch handed to a thread and back", "handoff", 2),
    # Every call in flight holds a pool thread while it waits for its batch: 64 threads for 64 in flight.
    ("echo: sync grpc server, 64 threads, each batch handed to a thread", "sync-handoff", 64),
)


def floor_targets(seqserve: Sequence[tuple[str, Server, Endpoint]], echo: Server,
                  echo_variants: Sequence[tuple[str, Server]] = ()) -> list[Target]:
    """Each seqserve under test with its endpoint, and the echo (and its variants), sent the first endpoint's
    request bytes."""
    echoed = echo_endpoint(list(seqserve[0][2].requests))
    return [*(Target(label, server, endpoint, FLOOR_CHANNELS) for label, server, endpoint in seqserve),
            Target(ECHO, echo, echoed, FLOOR_CHANNELS),
            *(Target(label, server, echoed, FLOOR_CHANNELS) for label, server in echo_variants)]


def floor_sweep(client: LoadClient, targets: Sequence[Target], plan: Plan,
                outcome: Outcome) -> dict[str, dict[int, Summary]]:
    return sweep(client, targets, dataclasses.replace(plan, concurrencies=FLOOR_CONCURRENCIES), outcome)


@dataclasses.dataclass(frozen=True)
class FloorRatio:
    label: str
    clients: int
    throughput: float   # seqserve calls/s / echo calls/s
    cpu: float          # seqserve server CPU per call / echo's


def floor_ratios(table: dict[str, dict[int, Summary]]) -> list[FloorRatio]:
    echo = table[ECHO]
    return [FloorRatio(label, clients, s.throughput / echo[clients].throughput,
                       s.server_cpu_ms / echo[clients].server_cpu_ms)
            for label, by_clients in table.items() if label != ECHO
            for clients, s in sorted(by_clients.items())]


def model_cpu_ms(endpoint: Endpoint, calls: int, rounds: int) -> float:
    """CPU ms of one call's work in-process (the served pipeline on one text: tokenize, onnxruntime, labels),
    median over rounds: the model's own share of a served call, which no change to the serving removes."""
    endpoint.raw(0)  # first-run cost out of the timing, as the server's warm-up does
    per_call = []
    for _ in range(max(1, rounds)):
        began = time.process_time()
        for i in range(calls):
            endpoint.raw(i)
        per_call.append((time.process_time() - began) * 1000 / calls)
    return statistics.median(per_call)


def sentiment_only_dir(tmp: pathlib.Path) -> pathlib.Path:
    """A model folder holding only the sentiment model (a link): the servers start in seconds."""
    models = tmp / "models"
    models.mkdir()
    (models / "sentiment-bigru").symlink_to(REPO / "exported" / "sentiment-bigru")
    return models


def run_floor(plan: Plan, baseline_code: pathlib.Path | None, echo_variants: bool = False
              ) -> tuple[dict[str, dict[int, Summary]], float, Outcome]:
    """The section's table, the model's in-process CPU ms per call (model_cpu_ms) and what went wrong."""
    from bench.endpoints import sentiment_task
    from bench.run import newest
    from bench.texts import SENTENCES

    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        models = sentiment_only_dir(tmp)
        servers: list[Server] = []
        try:
            ours = start_seqserve("seqserve", models, tmp)
            servers.append(ours)
            # The calls ask for label and probabilities only (omit_tokens), as a caller counting calls/s
            # would; the same server with the per-token attention too shows what that detail costs.
            lean = sentiment_task(newest("sentiment-bigru"), SENTENCES, "sentiment-bigru", omit_tokens=True)
            full = sentiment_task(newest("sentiment-bigru"), SENTENCES, "sentiment-bigru")
            seqserve = [(THIS_TREE, ours, lean), (f"{THIS_TREE}, with tokens", ours, full)]
            if baseline_code is not None:
                # An older tree does not know omit_tokens: it answers with the tokens, as v1 always did.
                baseline = start_seqserve("baseline", models, tmp, code=baseline_code)
                servers.append(baseline)
                seqserve.append((f"seqserve ({baseline_code})", baseline, dataclasses.replace(lean, check=full.check)))
            echo = start_echo(tmp)
            servers.append(echo)
            variants: list[tuple[str, Server]] = []
            for label, mode, threads in ECHO_VARIANTS if echo_variants else ():
                variants.append((label, start_echo(tmp, mode, threads)))
                servers.append(variants[-1][1])
            with LoadClient() as client:
                table = floor_sweep(client, floor_targets(seqserve, echo, variants), plan, outcome)
        finally:
            for server in servers:
                server.stop()
    # After the servers stopped, so the in-process run has the cores the servers had.
    return table, model_cpu_ms(lean, plan.overhead_calls, plan.reps), outcome


def floor_lines(table: dict[str, dict[int, Summary]], model_ms: float | None = None) -> list[str]:
    """The section's table (calls/s, latency, server CPU per call) and seqserve/echo ratios; with `model_ms`
    (model_cpu_ms), what seqserve's CPU per call is besides the model, against the echo's."""
    header = ["server", "in flight", "calls/s median (min-max)", "p50 ms", "p99 ms", "server CPU ms/call", "failed"]
    rows = [[label, str(clients), f"{s.throughput:.0f} ({s.throughput_min:.0f}-{s.throughput_max:.0f})",
             f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.server_cpu_ms:.3f}", str(s.failed)]
            for label, by_clients in table.items() for clients, s in sorted(by_clients.items())]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
             *("| " + " | ".join(row) + " |" for row in rows), ""]
    if ECHO in table:
        lines += [f"- {r.label} / echo at {r.clients} in flight: {r.throughput:.2f}x the calls/s, "
                  f"{r.cpu:.2f}x the server CPU per call" for r in floor_ratios(table)]
    if ECHO in table and model_ms is not None:
        echo = table[ECHO]
        lines += [f"- the model alone (the served pipeline in-process, one text a call): {model_ms:.3f} ms CPU per "
                  f"call, {model_ms / min(echo.values(), key=lambda s: s.server_cpu_ms).server_cpu_ms:.2f}x the "
                  "echo's cheapest CPU per call"]
        lines += [f"- {label} besides the model at {clients} in flight: {s.server_cpu_ms - model_ms:.3f} ms CPU "
                  f"per call, {(s.server_cpu_ms - model_ms) / echo[clients].server_cpu_ms:.2f}x the echo's"
                  for label, by_clients in table.items() if label.startswith("seqserve")
                  for clients, s in sorted(by_clients.items())]
    return lines
