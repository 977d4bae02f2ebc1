"""docs/benchmarks.md from one run's results, with its plots beside it."""

from __future__ import annotations

import datetime
import pathlib

from bench import plots, translation_report, translation_scheduling
from bench.floor import ECHO, FLOOR_CHANNELS, floor_lines
from bench.goals import Goal, batching_goal, floor_goals, overhead_goals, peer_goal
from bench.run import INT8, OFF, ON, ONE_WORKER, PEER, TWO_WORKERS, V2, BenchResults
from bench.scenarios import WORKER_CHANNELS, median
from bench.servers import REPO
from bench.stats import Summary


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def _sweep_rows(sweeps: dict[str, dict[int, Summary]], labels: list[str]) -> list[list[str]]:
    return [
        [label, str(clients), f"{s.throughput:.0f} ({s.throughput_min:.0f}-{s.throughput_max:.0f})",
         f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.server_cpu_ms:.2f}", f"{s.client_cpu_share:.0%}",
         str(s.calls), str(s.failed)]
        for label in labels if label in sweeps for clients, s in sorted(sweeps[label].items())
    ]


SWEEP_HEADER = ["configuration", "clients", "calls/s median (min-max)", "p50 ms", "p99 ms", "server CPU ms/call",
                "client CPU", "calls", "failed"]


def goals(results: BenchResults) -> list[Goal]:
    found = overhead_goals([r for r in results.overhead if r.server != OFF])
    top = max(results.plan.concurrencies)
    if ON in results.sweeps and OFF in results.sweeps:
        found.append(batching_goal(results.sweeps[ON][top], results.sweeps[OFF][top], top))
    if PEER in results.sweeps:
        for label in (ON, V2):
            found.append(peer_goal(label, results.sweeps[label][top], results.sweeps[PEER][top], top))
    if results.decoding is not None:
        found += translation_report.goals(results.decoding)
    if ON in results.floor and ECHO in results.floor:
        found += floor_goals(results.floor[ON], results.floor[ECHO])
    if results.scheduling is not None:
        found += translation_scheduling.goals(results.scheduling)
    return found


def reading(results: BenchResults) -> list[str]:
    """How to read the figures: where the CPU went, from this run's own numbers."""
    top = max(results.plan.concurrencies)
    rows = [
        [label, f"{s.throughput:.0f}", f"{s.server_cpu_ms:.2f}", f"{s.throughput * s.server_cpu_ms / 1000:.2f}",
         f"{s.client_cpu_share:.2f}"]
        for label in (ON, OFF, V2, INT8, PEER) if label in results.sweeps
        for s in [results.sweeps[label][top]]
    ]
    return [
        "", "## Reading the figures", "",
        f"Where the CPU went at {top} clients (server CPU: all of the server's processes and threads; cores = "
        "calls/s x CPU per call):", "",
        *_table(["configuration", "calls/s", "server CPU ms/call", "server cores busy", "client cores busy"], rows),
        "",
        "- Every call costs the server a fixed share of Python work on its one event loop (gRPC, protobuf, "
        "validation, metrics) besides the model. Batching removes model runs and hand-offs to the inference "
        "threads, not that per-call share; with one short text per call the model is a small part of a call, "
        "so the gain of batching is bounded by the per-call cost, which is what the batching goal measures. "
        "Calls of many texts, or heavier models (translation), gain more.",
        "- The batcher's default `--queue-delay-policy adaptive` waits only for as many texts as the last "
        "batch held, so at 1 client a call runs at once; under load it still waits up to "
        "`--max-queue-delay-ms` (5 ms) for company (docs/serving.md).",
        "- The machine is shared (see above): throughput of one round can drop by half when another job "
        "wakes up. CPU per call moves much less than throughput and is the better figure to compare servers "
        "by; goals with thin margins may flip between runs.",
    ]


def worker_lines(results: BenchResults) -> list[str]:
    """Section 7: one server process vs two (--workers 2), Sentiment.Analyze at the top concurrency."""
    top = max(results.plan.concurrencies)
    lines = ["## 7. Worker processes: --workers 1 vs 2", "",
             f"Sentiment.Analyze, one text per call, {top} calls in flight over {WORKER_CHANNELS} connections "
             "(SO_REUSEPORT hands each connection to one worker), the two servers interleaved in every round. "
             "Server CPU counts every process of a server (supervisor and workers). Sizing rule: docs/deploy.md.",
             ""]
    if not results.workers:
        return [*lines, "Not run.", ""]
    lines += _table(["configuration", "calls/s median (min-max)", "p50 ms", "p99 ms", "server CPU ms/call",
                     "server cores busy", "client cores busy", "failed"], [
        [label, f"{s.throughput:.0f} ({s.throughput_min:.0f}-{s.throughput_max:.0f})", f"{s.p50_ms:.2f}",
         f"{s.p99_ms:.2f}", f"{s.server_cpu_ms:.2f}", f"{s.throughput * s.server_cpu_ms / 1000:.2f}",
         f"{s.client_cpu_share:.2f}", str(s.failed)]
        for label in (ONE_WORKER, TWO_WORKERS) if label in results.workers for s in [results.workers[label]]])
    if ONE_WORKER in results.workers and TWO_WORKERS in results.workers:
        one, two = results.workers[ONE_WORKER], results.workers[TWO_WORKERS]
        lines += ["", f"2 workers / 1 worker: {two.throughput / one.throughput:.2f}x the calls/s, "
                  f"{two.server_cpu_ms / one.server_cpu_ms:.2f}x the server CPU per call."]
    return [*lines, ""]


def floor_section(results: BenchResults) -> list[str]:
    """Section 8: seqserve vs a bare grpc.aio echo server (issue #20)."""
    lines = ["## 8. The Python gRPC floor: seqserve vs a bare grpc.aio echo", "",
             "The same load client sends the same Sentiment.Analyze request bytes (one short text, omit_tokens) to "
             "seqserve (batching on) and to `bench/peer/echo.py`, a grpc.aio server that answers with the request's "
             f"own bytes (no protobuf, interceptors, metrics or model), over {FLOOR_CHANNELS} connections, the two "
             "interleaved in every round. seqserve/echo is the share of the floor seqserve reaches; what it costs "
             "above the echo is its own per-call work (docs/serving.md, Per-call cost).", ""]
    if not results.floor:
        return [*lines, "Not run.", ""]
    return [*lines, *floor_lines(results.floor, results.floor_model_ms), ""]


def write_report(results: BenchResults, out: pathlib.Path, mode: str) -> list[Goal]:
    images = out.parent / "benchmarks"
    plots.overhead_plot(results.overhead, images / "overhead.png")
    plots.concurrency_plot(results.sweeps, [ON, OFF], images / "batching.png", "Dynamic batching on vs off")
    peer_labels = [label for label in (PEER, V2, ON) if label in results.sweeps]
    plots.concurrency_plot(results.sweeps, peer_labels, images / "peer.png", "seqserve vs MLServer")
    plots.variant_plot(results.variants, images / "int8.png")
    found = goals(results)
    rel = images.name
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench run{' --quick' if mode == 'quick' else ''}"
        f"{' --pause-training' if results.paused else ''}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC in {results.seconds:.0f} s ({mode} mode: "
        f"{results.plan.reps} interleaved rounds, {results.plan.run_seconds:g} s per load run). Every figure is a "
        "median over the rounds (each round's own p50 and p99); ratios compare configurations measured in the "
        "same run. The servers run as their own processes (`python -m service`, default flags unless stated); "
        "the load client (`bench/loadgen.py`: grpc.aio, bounded count and concurrency, every status code "
        "checked, one response per run parsed and checked) runs in another process, on the same 2 cores, so "
        "its own CPU use is part of every served figure.",
        "",
        "## Machine",
        "",
    ]
    for key, value in results.machine.items():
        if isinstance(value, list):
            lines.append(f"- {key}:")
            lines += [f"  - `{item}`" for item in value]
        else:
            lines.append(f"- {key}: {value}")
    lines.append(f"- training jobs paused (SIGSTOP, resumed with SIGCONT after the run): "
                 f"{', '.join(map(str, results.paused)) or 'none were running'}")
    lines += ["", "## Goals", ""]
    lines += _table(["goal", "measured", "met"],
                    [[g.goal, g.measured, "met" if g.met else "**not met**"] for g in found])
    lines += ["", f"Failed calls in the whole run: {results.outcome.failed_calls}."]
    lines += [f"- {error}" for error in results.outcome.errors]
    lines += reading(results)
    lines += [
        "", "## 1. Overhead: served call vs onnxruntime in-process, batch 1", "",
        "One call in flight at a time, the same inputs. Baseline of the task API: its pipeline in-process "
        "(tokenize, onnxruntime, labels and attention), 1 onnxruntime thread as served; baseline of V2: "
        "`session.run` on the same tensors.", "",
    ]
    header = ["endpoint", "server", "in-process p50 / p99 ms", "served p50 / p99 ms", "ratio p50", "ratio p99"]
    lines += _table(header, [
        [r.endpoint, r.server, f"{r.raw.p50_ms:.3f} / {r.raw.p99_ms:.3f}",
         f"{r.served.p50_ms:.3f} / {r.served.p99_ms:.3f}", f"{r.ratio_p50:.2f}x", f"{r.ratio_p99:.2f}x"]
        for r in results.overhead])
    lines += ["", f"![overhead]({rel}/overhead.png)", "",
              "## 2. Dynamic batching on vs off", "",
              f"Off: `{' '.join(('--max-batch-size', '1', '--max-queue-delay-ms', '0'))}`; on: the defaults "
              "(32 texts, 5 ms). One text per call, sentiment-bigru fp32; the task API's calls set omit_tokens "
              "(label and probabilities, no per-token attention).", ""]
    lines += _table(SWEEP_HEADER, _sweep_rows(results.sweeps, [ON, OFF]))
    lines += ["", f"![batching]({rel}/batching.png)", "", "## 3. Peer server: MLServer", ""]
    if results.peer_note:
        lines += [f"Not measured: {results.peer_note}.", ""]
    else:
        lines += ["MLServer 1.7.1 in its own virtualenv with a custom `MLModel` (`bench/peer/onnx_runtime.py`) "
                  "loading the same .onnx in onnxruntime 1.32 (1 intra-op thread, as seqserve), adaptive batching "
                  "on with seqserve's limits (32, 5 ms), `parallel_workers` 1 (its default). Both V2 endpoints get "
                  "the same tokenized tensors (all padded to one width: MLServer batches by concatenating tensors "
                  "and needs equal widths); the task API gets the texts. uvloop is pinned to 0.21.0 in that "
                  "virtualenv: with a newer one MLServer 1.7.1's worker processes fail at start.", ""]
    lines += _table(SWEEP_HEADER, _sweep_rows(results.sweeps, [PEER, V2, ON]))
    lines += ["", f"![peer]({rel}/peer.png)", ""]
    lines += (translation_report.section_lines(results.decoding, images, rel) if results.decoding is not None
              else ["## 4. Translation decoding", "", "Not run.", ""])
    lines += ["Served endpoints under load (`bench.endpoints.FACTORIES`)"
              + (" beside the sentiment task API: " + ", ".join(results.extra_endpoints)
                 + " (overhead in section 1)." if results.extra_endpoints
                 else ": none was served when this ran."), "",
              *([*_table(SWEEP_HEADER, _sweep_rows(results.sweeps, [ON, *results.extra_endpoints])), ""]
                if results.extra_endpoints else []),
              "## 5. int8 vs fp32", "",
              "Speed: the pipeline in-process (1 thread), and served at each concurrency. Quality: the pooled "
              "test split (2,371 sentences) from each manifest, measured through the served pipeline at export.", ""]
    fp32, int8 = results.variants
    lines += _table(["variant", "model.onnx bytes", "batch 1 p50 ms", "batch 32 p50 ms", "macro-F1", "accuracy"], [
        [v.name, f"{v.model_bytes:,}", f"{v.batch1.p50_ms:.3f}", f"{v.batch32.p50_ms:.2f}",
         f"{v.quality['macro_f1']:.4f}", f"{v.quality['accuracy']:.4f}"] for v in results.variants])
    lines += ["", f"int8/fp32: batch 1 {int8.batch1.p50_ms / fp32.batch1.p50_ms:.2f}x the time, batch 32 "
              f"{int8.batch32.p50_ms / fp32.batch32.p50_ms:.2f}x, macro-F1 delta "
              f"{int8.quality['macro_f1'] - fp32.quality['macro_f1']:+.4f}, accuracy delta "
              f"{int8.quality['accuracy'] - fp32.quality['accuracy']:+.4f}.", ""]
    lines += _table(SWEEP_HEADER, _sweep_rows(results.sweeps, [ON, INT8]))
    lines += ["", f"![int8]({rel}/int8.png)", ""]
    lines += translation_report.int8_lines(results.decoding)
    lines += ["## 6. Cold start and memory", ""]
    starts = [s for s, _ in results.cold]
    models = ", ".join(sorted(p.name for p in (REPO / "exported").iterdir() if p.is_dir()))
    lines += [f"seqserve on every exported model ({models}), spawn to health "
              f"SERVING: median {median(starts):.2f} s over {len(starts)} starts "
              f"({', '.join(f'{s:.2f}' for s in starts)} s); RSS at that moment "
              f"{median([r for _, r in results.cold]) / 2**20:.0f} MiB.", ""]
    lines += _table(["process", "RSS MiB"], [[k, f"{v / 2**20:.0f}"] for k, v in results.rss.items()])
    lines.append("")
    lines += worker_lines(results)
    lines += floor_section(results)
    lines += (translation_scheduling.section_lines(results.scheduling) if results.scheduling is not None
              else ["## 9. Translation scheduling: iteration-level vs batch at a time", "", "Not run.", ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), "utf-8")
    return found
