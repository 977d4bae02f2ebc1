"""Section 9: iteration-level scheduling of translation (issue #20 item 3), measured from outside.

    python -m bench scheduling [--quick]     (this section alone, printed; `python -m bench run` runs it too)

Two servers on the same committed Transformer, one with the default `--decode-scheduling iteration`, one
with `--decode-scheduling batch` (one batch at a time, light calls between its chunks: the behaviour
before). In every round each server is measured in turn, the order alternating between rounds, while the
other one idles (the machine is shared with training jobs: both see the same conditions, round by round):

- idle: light clients (one short text, greedy, back to back) alone: their p50 and p99;
- heavy: the same light clients while one heavy call runs (64 texts at beam 16 by default, the issue's
  call): their p50 and p99 during it, and the heavy call's own time;
- mixed: several clients sending a fixed mix of calls (short greedy texts, beam-4 calls of a few texts, a
  16-text greedy call, a long text at beam 4 with 2 best) for a fixed time: target tokens per second (the
  best hypotheses' subwords) and calls per second.

Then, in-process on the same weights (section 4's worker processes, one per engine, 1 thread): target
tokens/s of batches of 32 test verses, greedy and beam 4, fp32 and int8, decoded by the step scheduler,
batch at a time, and by CTranslate2 (the issue: 0.49x CTranslate2 at batch 32 greedy int8, 0.39x beam 4).

Every figure is the median over the rounds of each round's own figure. Goal (the issue): with a heavy call
in flight the light calls' p99 within 3x of their idle p99.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from seqserve.v1 import translation_pb2, translation_pb2_grpc

from bench.goals import Goal
from bench.servers import REPO, Server, start_seqserve
from bench.texts import SENTENCES
from bench.translation_bench import (
    EXPORTED,
    CaseResult,
    DecodingPlan,
    Engine,
    _newest,
    _run_worker,
    ct2_available,
    test_texts,
)

MODEL = "transformer"
ITERATION, BATCH = "iteration-level (default)", "batch at a time (`--decode-scheduling batch`)"
MODES: dict[str, tuple[str, ...]] = {ITERATION: (), BATCH: ("--decode-scheduling", "batch")}
P99_GOAL = 3.0  # light calls' p99 with a heavy call in flight, as a multiple of their idle p99
LIGHT_TEXT = "Jesus wept."
LONG_TEXT = ("And God said, Let us make man in our image, after our likeness: and let them have dominion over the "
             "fish of the sea, and over the fowl of the air, and over the cattle, and over all the earth.")
CALL_TIMEOUT = 120.0


@dataclass(frozen=True)
class SchedulingPlan:
    rounds: int
    idle_seconds: float
    mixed_seconds: float
    light_clients: int
    mixed_clients: int
    heavy_texts: int
    heavy_beam: int


FULL_SCHEDULING = SchedulingPlan(rounds=3, idle_seconds=4.0, mixed_seconds=10.0, light_clients=2, mixed_clients=8,
                                 heavy_texts=64, heavy_beam=16)
QUICK_SCHEDULING = SchedulingPlan(rounds=1, idle_seconds=0.5, mixed_seconds=1.0, light_clients=1, mixed_clients=2,
                                  heavy_texts=4, heavy_beam=4)
# In-process against CTranslate2: the cases, batches of 32 test verses, 1 thread.
FULL_VERSUS_CT2 = DecodingPlan(rounds=2, repeats=2, threads=(1,), cases=((32, 1), (32, 4)), texts={32: 32},
                               shortest=False, one_process=False)
QUICK_VERSUS_CT2 = DecodingPlan(rounds=1, repeats=1, threads=(1,), cases=((2, 1), (2, 4)), texts={2: 2},
                                shortest=True, one_process=True)
IN_PROCESS_ENGINES = ("onnx-scheduled", "onnx-batch", "ct2")


@dataclass
class Round:
    idle: list[float]               # light call seconds, nothing else running
    during_heavy: list[float]       # light call seconds while the heavy call ran
    heavy_seconds: float
    mixed_tokens_per_s: float
    mixed_calls_per_s: float
    failed: int


@dataclass
class ModeResult:
    label: str
    rounds: list[Round] = field(default_factory=list)

    def _median(self, values: Sequence[float]) -> float:
        return statistics.median(values) if values else float("nan")

    def p(self, attribute: str, quantile: float) -> float:
        """Median over rounds of each round's quantile (ms) of `idle` or `during_heavy`."""
        return self._median([_quantile(getattr(r, attribute), quantile) * 1000 for r in self.rounds
                             if getattr(r, attribute)])

    @property
    def heavy_seconds(self) -> float:
        return self._median([r.heavy_seconds for r in self.rounds])

    @property
    def tokens_per_s(self) -> float:
        return self._median([r.mixed_tokens_per_s for r in self.rounds])

    @property
    def calls_per_s(self) -> float:
        return self._median([r.mixed_calls_per_s for r in self.rounds])

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rounds)

    @property
    def light_calls(self) -> tuple[int, int]:
        return sum(len(r.idle) for r in self.rounds), sum(len(r.during_heavy) for r in self.rounds)


@dataclass
class SchedulingResults:
    plan: SchedulingPlan
    modes: dict[str, ModeResult]
    errors: list[str] = field(default_factory=list)
    in_process: list[CaseResult] = field(default_factory=list)  # scheduler vs batch at a time vs CTranslate2
    in_process_note: str = ""
    in_process_rounds: int = 0


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _request(texts: Sequence[str], beam: int, n_best: int = 1) -> translation_pb2.TranslateRequest:
    return translation_pb2.TranslateRequest(texts=list(texts), model=MODEL,
                                            options=translation_pb2.DecodingOptions(beam_size=beam, n_best=n_best))


LIGHT = _request([LIGHT_TEXT], 1)
# The mixed traffic, cycled by every client from its own offset: mostly short greedy calls, some heavier.
MIX = (LIGHT, _request(SENTENCES[:4], 4), LIGHT, _request(list(SENTENCES), 1), LIGHT,
       _request([LONG_TEXT], 4, 2), LIGHT, _request(SENTENCES[4:6], 1))


class Clients:
    """Threads calling back to back, each on its own channel, until stopped; every call's start, seconds,
    target tokens and status are kept."""

    def __init__(self, target: str, requests: Sequence[translation_pb2.TranslateRequest], count: int) -> None:
        self.target, self.requests, self.count = target, list(requests), count
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, int, bool]] = []  # (start, seconds, target tokens, ok)
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self, offset: int) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = translation_pb2_grpc.TranslationStub(channel)
            index = offset
            while not self.stop.is_set():
                request = self.requests[index % len(self.requests)]
                index += 1
                began = time.monotonic()
                try:
                    response = stub.Translate(request, timeout=CALL_TIMEOUT)
                    tokens, ok = sum(len(r.hypotheses[0].tokens) for r in response.results), True
                except grpc.RpcError:
                    tokens, ok = 0, False
                with self._lock:
                    self.samples.append((began, time.monotonic() - began, tokens, ok))

    def between(self, start: float, end: float) -> list[tuple[float, float, int, bool]]:
        """The calls that started and ended within [start, end]."""
        with self._lock:
            return [s for s in self.samples if start <= s[0] and s[0] + s[1] <= end]

    def overlapping(self, start: float, end: float) -> list[tuple[float, float, int, bool]]:
        """The calls in flight at some moment of [start, end]: a call stalled across the whole window counts."""
        with self._lock:
            return [s for s in self.samples if s[0] < end and s[0] + s[1] > start]


def heavy_texts(count: int) -> list[str]:
    return [SENTENCES[i % len(SENTENCES)] for i in range(count)]


def measure_round(server: Server, plan: SchedulingPlan) -> Round:
    failed = 0
    with Clients(server.target, [LIGHT], plan.light_clients) as light:
        time.sleep(plan.idle_seconds)
        idle_end = time.monotonic()
        with grpc.insecure_channel(server.target) as channel:
            stub = translation_pb2_grpc.TranslationStub(channel)
            heavy_start = time.monotonic()
            try:
                stub.Translate(_request(heavy_texts(plan.heavy_texts), plan.heavy_beam), timeout=CALL_TIMEOUT)
            except grpc.RpcError:
                failed += 1
            heavy_end = time.monotonic()
    idle = [s for s in light.between(0.0, idle_end) if s[3]]
    during = [s for s in light.overlapping(heavy_start, heavy_end) if s[3]]
    failed += sum(1 for s in light.samples if not s[3])
    with Clients(server.target, MIX, plan.mixed_clients) as mixed:
        began = time.monotonic()
        time.sleep(plan.mixed_seconds)
        ended = time.monotonic()
    done = mixed.between(began, ended)
    failed += sum(1 for s in mixed.samples if not s[3])
    return Round(idle=[s[1] for s in idle], during_heavy=[s[1] for s in during], heavy_seconds=heavy_end - heavy_start,
                 mixed_tokens_per_s=sum(s[2] for s in done) / (ended - began),
                 mixed_calls_per_s=len(done) / (ended - began), failed=failed)


def run_scheduling(plan: SchedulingPlan, versus: DecodingPlan | None = None) -> SchedulingResults:
    """The served comparison, then (if `versus`) the in-process one against CTranslate2."""
    results = SchedulingResults(plan, {label: ModeResult(label) for label in MODES})
    with tempfile.TemporaryDirectory(prefix="bench-scheduling-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        models = tmp / "models"
        models.mkdir()
        (models / MODEL).symlink_to(REPO / "exported" / MODEL)  # one model: fast start, no other batcher
        servers: dict[str, Server] = {}
        try:
            for number, (label, args) in enumerate(MODES.items()):
                servers[label] = start_seqserve(f"scheduling-{number}", models, tmp, args)
            labels = list(MODES)
            for round_index in range(plan.rounds):
                order = labels if round_index % 2 == 0 else labels[::-1]  # alternate who goes first
                for label in order:
                    results.modes[label].rounds.append(measure_round(servers[label], plan))
        except (RuntimeError, grpc.RpcError) as error:
            results.errors.append(f"translation scheduling: {error}")
        finally:
            for server in servers.values():
                server.stop()
    if versus is not None:  # after the servers stopped: the engines get the cores to themselves
        results.in_process, results.in_process_note, errors = run_versus_ct2(versus)
        results.in_process_rounds = versus.rounds
        results.errors += errors
    return results


def run_versus_ct2(plan: DecodingPlan) -> tuple[list[CaseResult], str, list[str]]:
    """Scheduled, batch-at-a-time and CTranslate2 decoding of the same batches, fp32 and int8, each engine
    in a process of its own (section 4's worker); (rows, note, errors)."""
    fp32, int8 = _newest(EXPORTED / MODEL), _newest(EXPORTED / f"{MODEL}-int8")
    if fp32 is None:
        return [], f"no {MODEL} is exported", []
    engines = [Engine(MODEL, name, precision, str(path if name != "ct2" else fp32), 1)
               for name in IN_PROCESS_ENGINES if name != "ct2" or ct2_available()
               for precision, path in (("fp32", fp32), ("int8", int8)) if path is not None]
    note = "" if ct2_available() else "CTranslate2 is not installed: its rows are missing"
    texts = test_texts(plan)
    found: dict[tuple[str, str, int, int], CaseResult] = {}
    errors: list[str] = []
    for round_index in range(plan.rounds):  # each engine in a fresh process per round, the order rotated
        start = round_index % len(engines)
        order = engines[start:] + engines[:start]
        for group in [order] if plan.one_process else [[e] for e in order]:
            try:
                reports = _run_worker(group, plan, texts)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
                errors.append(f"{', '.join(e.label for e in group)}: {error}")
                continue
            for spec, report in zip(group, reports, strict=True):
                for case in report["cases"]:
                    row = found.setdefault((spec.engine, spec.precision, case["batch"], case["beam"]),
                                           CaseResult(spec, case["batch"], case["beam"], outputs=case["outputs"]))
                    row.tokens_per_s += [case["target_tokens"] / seconds for seconds in case["seconds"]]
                    row.sentences_per_s += [case["sentences"] / seconds for seconds in case["seconds"]]
    rows = list(found.values())
    return rows, note, errors


def _tokens(rows: Sequence[CaseResult], engine: str, precision: str, batch: int, beam: int) -> CaseResult | None:
    return next((r for r in rows if (r.engine.engine, r.engine.precision, r.batch, r.beam)
                 == (engine, precision, batch, beam)), None)


def goals(results: SchedulingResults) -> list[Goal]:
    found = []
    for label, mode in results.modes.items():
        if not mode.rounds:
            continue
        idle, heavy = mode.p("idle", 0.99), mode.p("during_heavy", 0.99)
        found.append(Goal(f"translation, {label}: light p99 with a heavy call in flight <= {P99_GOAL:g}x idle",
                          f"{heavy / idle:.1f}x ({heavy:.0f} vs {idle:.0f} ms)", heavy <= P99_GOAL * idle))
    return found


def section_lines(results: SchedulingResults) -> list[str]:
    plan = results.plan
    lines = ["## 9. Translation scheduling: iteration-level vs batch at a time", "",
             f"Two servers on `{MODEL}` (fp32), one per scheduling mode, measured in turn in each of {plan.rounds} "
             "rounds (the order alternating; the other server idles meanwhile). Light calls: "
             f"{plan.light_clients} clients sending one short text (\"{LIGHT_TEXT}\", greedy) back to back, "
             f"for {plan.idle_seconds:g} s alone, then during one heavy call of {plan.heavy_texts} texts at beam "
             f"{plan.heavy_beam}. Mixed traffic: {plan.mixed_clients} clients cycling through short greedy calls, "
             "beam-4 calls of 4 texts, a greedy call of 16 texts and a long text at beam 4 (n_best 2) for "
             f"{plan.mixed_seconds:g} s; target tokens are the best hypotheses' subwords. Medians over rounds of "
             "each round's figure. docs/serving.md, \"Iteration-level scheduling\", says how the scheduler works.",
             ""]
    header = ["scheduling", "light p50 / p99 ms, idle", "light p50 / p99 ms, heavy call in flight", "p99 ratio",
              "heavy call s", "mixed: target tokens/s", "mixed: calls/s", "light calls (idle, heavy)", "failed"]
    rows = []
    for label, mode in results.modes.items():
        if not mode.rounds:
            continue
        idle99, heavy99 = mode.p("idle", 0.99), mode.p("during_heavy", 0.99)
        rows.append([label, f"{mode.p('idle', 0.5):.1f} / {idle99:.1f}",
                     f"{mode.p('during_heavy', 0.5):.1f} / {heavy99:.1f}", f"{heavy99 / idle99:.1f}x",
                     f"{mode.heavy_seconds:.1f}", f"{mode.tokens_per_s:.0f}", f"{mode.calls_per_s:.1f}",
                     "{} / {}".format(*mode.light_calls), str(mode.failed)])
    if not rows:
        return [*lines, "Not run.", *[f"- {e}" for e in results.errors], ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
              *("| " + " | ".join(row) + " |" for row in rows), ""]
    iteration, batch = results.modes[ITERATION], results.modes[BATCH]
    if iteration.rounds and batch.rounds:
        ratio = iteration.tokens_per_s / batch.tokens_per_s
        lines += [f"Iteration-level / batch at a time: mixed traffic {ratio:.2f}x the target tokens/s, light p99 "
                  "during the heavy call "
                  f"{iteration.p('during_heavy', 0.99) / batch.p('during_heavy', 0.99):.2f}x, the heavy call "
                  f"{iteration.heavy_seconds / batch.heavy_seconds:.2f}x the time.", ""]
    lines += in_process_lines(results)
    lines += [f"- {e}" for e in results.errors]
    return lines


def in_process_lines(results: SchedulingResults) -> list[str]:
    rows = results.in_process
    lines = ["In-process, the same weights, 1 thread (section 4's worker processes, one per engine and round, "
             f"{results.in_process_rounds} rounds in rotated order, median tokens/s): batches of test verses "
             "decoded by the step scheduler (the batch as one admission) and batch at a time, each as the server "
             "runs a batch in that mode (int8: one text per onnxruntime run, so answers do not depend on "
             "batch-mates; docs/serving.md), and by CTranslate2 (batched, its own search). Same outputs: texts "
             "whose best tokens equal the batch-at-a-time ones.", ""]
    if not rows:
        return [*lines, f"Not run{': ' + results.in_process_note if results.in_process_note else ''}.", ""]
    header = ["precision", "batch", "beam", "step scheduler tok/s", "batch at a time tok/s", "CTranslate2 tok/s",
              "scheduler / CTranslate2", "scheduler / batch at a time", "same outputs"]
    table = []
    for precision in ("fp32", "int8"):
        for batch, beam in sorted({(r.batch, r.beam) for r in rows}):
            ours, whole, theirs = (_tokens(rows, e, precision, batch, beam) for e in IN_PROCESS_ENGINES)
            if ours is None:
                continue
            same = "-" if whole is None else \
                f"{sum(a == b for a, b in zip(ours.outputs, whole.outputs, strict=True))}/{len(ours.outputs)}"
            table.append([precision, str(batch), str(beam), f"{ours.tokens:.0f}",
                          "-" if whole is None else f"{whole.tokens:.0f}",
                          "-" if theirs is None else f"{theirs.tokens:.0f}",
                          "-" if theirs is None else f"{ours.tokens / theirs.tokens:.2f}x",
                          "-" if whole is None else f"{ours.tokens / whole.tokens:.2f}x", same])
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
              *("| " + " | ".join(row) + " |" for row in table), ""]
    if results.in_process_note:
        lines += [f"Note: {results.in_process_note}.", ""]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results = run_scheduling(QUICK_SCHEDULING if args.quick else FULL_SCHEDULING,
                             QUICK_VERSUS_CT2 if args.quick else FULL_VERSUS_CT2)
    print("\n".join(section_lines(results)))
    for goal in goals(results):
        print(f"{'met    ' if goal.met else 'NOT MET'}  {goal.goal}: {goal.measured}")
    for error in results.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
