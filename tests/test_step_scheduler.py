"""Iteration-level scheduling (issue #20 item 3): batches decode a step at a time, interleaved and fair in
CPU time; a call is answered when its own texts are done; a stopped call at once; memory stays within
each class's budget; and every translation is bit for bit the batch-at-a-time one (on the committed
models, greedy and beam, mixed lengths and options, interleaved with a heavier batch).

The scheduler's own behaviour is pinned with stand-in units and a clock that counts the work done, so
nothing depends on timing; the batcher test synchronises with events."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from exported_models import EXPORTED

from service.batching.batcher import DynamicBatcher
from service.batching.errors import DeadlineExpiredError
from service.batching.runs import items_per_run_for
from service.batching.step_scheduler import LIGHT_WEIGHT, Admission, ScheduledCall, StepScheduler
from service.metrics.registry import ServingMetrics
from service.model.model_config import BatchConfig
from service.model.pipeline import StepWork
from service.model.timing import StageTimings
from service.pipelines.translation import DecodeOptions, Translation, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version

BUDGET = 100


class Work:
    """A stand-in unit: `steps` advances (each costing `cost` on the test clock) decode items `items`;
    the log records (name, step) in the order the scheduler ran them."""

    def __init__(self, name: str, items: Sequence[int], steps: int, log: list[tuple[str, int]],
                 cost: float = 1.0, size: int = 10, fail_at: int | None = None) -> None:
        self.name, self.steps, self.log = name, steps, log
        self.items: Sequence[int] = list(items)
        self.cost, self.bytes, self.fail_at = cost, size, fail_at
        self.done_steps = 0
        self.live: list[int] = []
        self.stops: Sequence[Callable[[], bool]] = []
        self.clock: list[float] | None = None

    def start(self, stops: Sequence[Callable[[], bool]]) -> bool:
        self.live = [i for i in self.items if not stops[i]()]
        self.stops = stops
        return bool(self.live)

    @property
    def finished(self) -> bool:
        return self.done_steps >= self.steps

    def advance(self) -> None:
        if self.fail_at is not None and self.done_steps == self.fail_at:
            raise ValueError(f"{self.name} failed")
        if all(self.stops[i]() for i in self.live):  # as a search does: stopped rows leave, none left
            self.done_steps = self.steps
            return
        self.done_steps += 1
        self.log.append((self.name, self.done_steps))
        assert self.clock is not None
        self.clock[0] += self.cost

    def results(self) -> dict[int, str]:
        return {i: f"{self.name}:{i}" for i in self.live if not self.stops[i]()}  # a stopped text has none


class Harness:
    """Admissions handed to the scheduler when `arrive_after` of the log's steps have run."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.clock = [0.0]
        self.arrivals: deque[tuple[int, Admission[str]]] = deque()
        self.delivered: dict[str, tuple[list[str | None] | None, Exception | None, int]] = {}
        self.stopped: dict[str, threading.Event] = {}
        self.finished: list[str] = []

    def call(self, name: str, start: int, size: int) -> ScheduledCall[str]:
        stop = self.stopped.setdefault(name, threading.Event())

        def deliver(outputs: list[str | None] | None, error: Exception | None) -> None:
            assert name not in self.delivered, f"{name} answered twice"
            self.delivered[name] = (outputs, error, len(self.log))
        return ScheduledCall(start, size, stop.is_set, deliver)

    def admission(self, name: str, calls: list[ScheduledCall[str]], units: list[Work], heavy: bool = False,
                  arrive_after: int = 0) -> Admission[str]:
        for unit in units:
            unit.clock = self.clock
        admission = Admission(calls, deque(units), heavy, StageTimings(), lambda _: self.finished.append(name))
        self.arrivals.append((arrive_after, admission))
        return admission

    def take(self, light_room: bool, heavy_room: bool, retry: bool) -> Admission[str] | None:
        if self.arrivals and len(self.log) >= self.arrivals[0][0]:
            admission = self.arrivals[0][1]
            if (heavy_room if admission.heavy else light_room):
                return self.arrivals.popleft()[1]
        return None

    def run(self) -> None:
        scheduler: StepScheduler[str] = StepScheduler(self.take, BUDGET, clock=lambda: self.clock[0])
        scheduler.run()
        assert not self.arrivals, "the session ended with admissions still to come"

    def steps_of(self, name: str, before: int) -> int:
        return sum(1 for unit, _ in self.log[:before] if unit == name)


def test_a_light_call_is_answered_while_a_heavy_one_still_decodes_and_the_cpu_is_shared_fairly() -> None:
    h = Harness()
    h.admission("heavy", [h.call("heavy", 0, 4)], [Work("heavy", [0, 1, 2, 3], 200, h.log, cost=5.0)], heavy=True)
    # Arrives once the heavy call has run 10 steps; each of its steps costs 5, each light step 1.
    h.admission("light", [h.call("light", 0, 1)], [Work("light", [0], 30, h.log, cost=1.0)], arrive_after=10)
    h.run()
    outputs, error, answered_at = h.delivered["light"]
    assert outputs == ["light:0"] and error is None
    assert h.delivered["heavy"][0] == ["heavy:0", "heavy:1", "heavy:2", "heavy:3"]
    # Answered long before the heavy call ends, and meanwhile the heavy call got 1/LIGHT_WEIGHT of the CPU
    # the light one used (30 light steps of 1; heavy steps of 5): a bounded slowdown, not a wait.
    heavy_meanwhile = h.steps_of("heavy", answered_at) - 10
    assert h.delivered["heavy"][2] == len(h.log) and answered_at < len(h.log) / 2
    assert abs(heavy_meanwhile - 30 / LIGHT_WEIGHT / 5) <= 1


def test_two_light_calls_share_the_cpu_equally() -> None:
    h = Harness()
    h.admission("a", [h.call("a", 0, 1)], [Work("a", [0], 40, h.log)])
    h.admission("b", [h.call("b", 0, 1)], [Work("b", [0], 40, h.log)], arrive_after=10)
    h.run()
    # b arrives after a's 10th step and starts level with it (no catch-up burst of 10 steps): from then
    # on they alternate until a's last step (a's 30 left against 30 of b's), then b runs its last 10 alone.
    assert [name for name, _ in h.log[:10]] == ["a"] * 10
    assert 19 <= sum(1 for name, _ in h.log[10:50] if name == "b") <= 21
    assert h.delivered["a"][2] in (69, 70) and h.delivered["b"][2] == len(h.log) == 80


def test_each_call_is_answered_when_its_own_units_are_done_not_when_its_batch_ends() -> None:
    h = Harness()
    # One batch of two calls: call a owns item 0 (first unit), call b items 1-2 (second unit).
    h.admission("batch", [h.call("a", 0, 1), h.call("b", 1, 2)],
                [Work("first", [0], 3, h.log), Work("second", [1, 2], 5, h.log)])
    h.run()
    assert h.delivered["a"][0] == ["first:0"] and h.delivered["a"][2] == 3
    assert h.delivered["b"][0] == ["second:1", "second:2"] and h.delivered["b"][2] == 8
    assert h.log == [("first", i) for i in range(1, 4)] + [("second", i) for i in range(1, 6)]  # in order
    assert h.finished == ["batch"]


def test_a_stopped_call_is_answered_at_once_and_a_unit_of_stopped_calls_never_starts() -> None:
    h = Harness()
    first = Work("first", [0, 1], 10, h.log)
    second = Work("second", [2], 10, h.log)
    h.admission("batch", [h.call("a", 0, 2), h.call("b", 2, 1)], [first, second])
    h.stopped["b"].set()  # b's client left before anything ran
    original = first.advance

    def advance_then_stop_a() -> None:
        original()
        if first.done_steps == 4:
            h.stopped["a"].set()  # a leaves mid-decode: answered before the next step
    first.advance = advance_then_stop_a  # type: ignore[method-assign]
    h.run()
    assert h.delivered["b"][2] == 0 and h.delivered["a"][2] == 4
    assert second.done_steps == 0  # never started: nobody waits for it


def test_each_class_stays_within_its_memory_budget_and_an_oversize_unit_runs_alone_in_its_class() -> None:
    h = Harness()
    # Two light admissions of 60 bytes each (budget 100): the second waits for the first to end.
    h.admission("l1", [h.call("l1", 0, 1)], [Work("l1", [0], 4, h.log, size=60)])
    h.admission("l2", [h.call("l2", 0, 1)], [Work("l2", [0], 4, h.log, size=60)])
    # A heavy unit of 250 bytes (one text over the budget) still runs: its class is empty.
    h.admission("h", [h.call("h", 0, 1)], [Work("h", [0], 4, h.log, size=250)], heavy=True)
    h.run()
    order = [name for name, _ in h.log]
    assert order.index("l2") > len(order) - 1 - order[::-1].index("l1")  # l2 only after l1's last step
    assert "h" in order[: order.index("l2")]  # the heavy class ran beside l1


class Unstartable(Work):
    def start(self, stops: Sequence[Callable[[], bool]]) -> bool:
        raise ValueError(f"{self.name} failed")


@pytest.mark.parametrize("failing", ["advance", "start"])
def test_a_failing_unit_fails_its_own_calls_only(failing: str) -> None:
    h = Harness()
    bad = Work("bad", [0], 5, h.log, fail_at=2) if failing == "advance" else Unstartable("bad", [0], 5, h.log)
    h.admission("bad", [h.call("bad", 0, 1)], [bad])
    h.admission("good", [h.call("good", 0, 1)], [Work("good", [0], 5, h.log)])
    h.run()
    assert isinstance(h.delivered["bad"][1], ValueError) and h.delivered["bad"][0] is None
    assert h.delivered["good"] == (["good:0"], None, h.delivered["good"][2])
    assert sorted(h.finished) == ["bad", "good"]


# -- the batcher runs a session ------------------------------------------------------------------------
class GatedPipeline:
    """Stands in for translation under the scheduler: each text is a unit of `steps` steps (`short` ones
    of 5); a gate on a text holds its first step until the test lets it go."""

    takes_stop_signals = True
    schedules_steps = True
    chunk_bytes = BUDGET

    def __init__(self, steps: int, short: Sequence[str] = ()) -> None:
        self.model = SimpleNamespace(name="m", version="1")
        self.steps, self.short = steps, set(short)
        self.log: list[tuple[str, int]] = []
        self.gates: dict[str, tuple[threading.Event, threading.Event]] = {}  # text -> (reached, go)

    def estimate_tokens(self, text: str) -> int:
        return 1

    def __call__(self, texts: Sequence[str], timings: Any = None, stops: Any = None,
                 between_chunks: Any = None) -> list[Any]:
        raise AssertionError("batch-at-a-time decoding ran under iteration-level scheduling")

    def plan(self, texts: Sequence[str], items_per_run: int, timings: Any = None) -> list[Any]:
        pipeline = self

        class Unit(Work):
            def advance(self) -> None:
                gate = pipeline.gates.get(self.name)
                if gate is not None and self.done_steps == 0:
                    gate[0].set()
                    assert gate[1].wait(10)
                super().advance()

            def results(self) -> dict[int, str]:
                return {i: f"out:{self.name}" for i in self.live if not self.stops[i]()}
        units = [Unit(text, [i], 5 if text in self.short else self.steps, self.log) for i, text in enumerate(texts)]
        for unit in units:
            unit.clock = [0.0]
        return units


async def until(event: threading.Event) -> None:
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, 10)


def test_the_batcher_answers_a_light_call_that_arrives_while_a_heavy_call_decodes() -> None:
    pipeline = GatedPipeline(steps=50, short=["light"])
    reached, go = pipeline.gates.setdefault("heavy-1", (threading.Event(), threading.Event()))

    async def scenario() -> tuple[Any, Any, list[tuple[str, int]]]:
        config = BatchConfig(max_batch_size=32, max_queue_delay_ms=0.0, max_queue_texts=100)
        b: DynamicBatcher[str, str] = DynamicBatcher(pipeline, config, ThreadPoolExecutor(2),  # type: ignore[arg-type]
                                                     ServingMetrics())
        b.start()
        heavy = asyncio.create_task(b.submit(["heavy-0", "heavy-1"], group=object()))
        await until(reached)  # the heavy call's second text is about to take its first step
        light = asyncio.create_task(b.submit(["light"]))
        await asyncio.sleep(0)  # queued before the heavy call goes on
        go.set()
        light_result = await light
        log_at_light = list(pipeline.log)
        heavy_result = await heavy
        await b.close()
        return light_result, heavy_result, log_at_light

    light_result, heavy_result, log_at_light = asyncio.run(scenario())
    assert light_result.outputs == ["out:light"]
    assert heavy_result.outputs == ["out:heavy-0", "out:heavy-1"]
    # The light call was answered while the heavy call's second text was still decoding.
    assert ("light", 5) in log_at_light and ("heavy-1", 50) not in log_at_light


# -- outputs: bit for bit the batch-at-a-time ones, on the committed models ----------------------------
TEXTS = ["Jesus wept.", "In the beginning God created the heaven and the earth.", "God is love.",
         "And God said, Let there be light: and there was light.",
         "Blessed are the meek: for they shall inherit the earth.",
         "The Lord is my shepherd; I shall not want. He maketh me to lie down in green pastures."]
MIXED = [DecodeOptions(beam_size=1), DecodeOptions(beam_size=4, n_best=2, alignment=True),
         DecodeOptions(beam_size=3, max_output_tokens=12), DecodeOptions(beam_size=1, alignment=True)]
COMMITTED = [m for m in ("transformer", "transformer-int8", "seq2seq-attention") if (EXPORTED / m / "1").is_dir()]


def same(a: Translation | None, b: Translation | None) -> bool:
    """Bit for bit: tokens, text, scores, alignment weights and confidence."""
    assert a is not None and b is not None
    if [(h.tokens, h.text, h.score, h.log_prob) for h in a.hypotheses] != \
            [(h.tokens, h.text, h.score, h.log_prob) for h in b.hypotheses]:
        return False
    if a.confidence != b.confidence:
        return False
    if a.alignment is None or b.alignment is None:
        return a.alignment is None and b.alignment is None
    return (a.alignment.weights.tobytes() == b.alignment.weights.tobytes()
            and a.alignment.source_tokens == b.alignment.source_tokens)


def scheduled(pipeline: TranslationPipeline, items_per_run: int,
              batches: list[list[TranslationRequest]]) -> list[list[Translation | None]]:
    """Each batch an admission of one call, all in one session (interleaved step by step), with the
    chunk budget the server uses."""
    outputs: dict[int, list[Translation | None]] = {}
    admissions: deque[Admission[Translation]] = deque()
    for number, batch in enumerate(batches):
        def deliver(result: list[Translation | None] | None, error: Exception | None, number: int = number) -> None:
            assert error is None and result is not None
            outputs[number] = result
        call: ScheduledCall[Translation] = ScheduledCall(0, len(batch), lambda: False, deliver)
        units: deque[StepWork[Translation]] = deque(pipeline.plan(batch, items_per_run))
        admissions.append(Admission([call], units, number == 0, StageTimings(), lambda _: None))

    def take(light_room: bool, heavy_room: bool, retry: bool) -> Admission[Translation] | None:
        return admissions.popleft() if admissions else None
    StepScheduler(take, pipeline.chunk_bytes).run()
    return [outputs[n] for n in range(len(batches))]


@pytest.mark.parametrize("name", COMMITTED)
def test_scheduled_translations_are_bit_for_bit_the_batch_at_a_time_ones(name: str) -> None:
    model = load_version(EXPORTED / name / "1", intra_op_threads=1)
    pipeline = TranslationPipeline(model)
    items_per_run = items_per_run_for(model)  # int8: one text per run, as served
    # A heavier batch (beam 6, every text) and a light batch of mixed lengths and options, interleaved.
    heavy = [TranslationRequest(t, DecodeOptions(beam_size=6, n_best=3, alignment=True)) for t in TEXTS]
    light = [TranslationRequest(t, MIXED[i % len(MIXED)]) for i, t in enumerate(TEXTS)]
    with_heavy, with_light = scheduled(pipeline, items_per_run, [heavy, light])
    for batch, results in ((heavy, with_heavy), (light, with_light)):
        expected: list[Translation | None] = []
        size = items_per_run or len(batch)
        for start in range(0, len(batch), size):  # what runs.run_in_runs hands the pipeline
            expected.extend(pipeline(batch[start : start + size]))
        assert all(same(r, e) for r, e in zip(results, expected, strict=True))


def test_another_heavy_call_waits_for_its_turn_while_light_calls_go_on() -> None:
    pipeline = GatedPipeline(steps=40, short=["light"])
    reached, go = pipeline.gates.setdefault("heavy-a", (threading.Event(), threading.Event()))

    async def scenario() -> list[Any]:
        config = BatchConfig(max_batch_size=32, max_queue_delay_ms=0.0, max_queue_texts=100)
        b: DynamicBatcher[str, str] = DynamicBatcher(pipeline, config, ThreadPoolExecutor(2),  # type: ignore[arg-type]
                                                     ServingMetrics())
        b.start()
        first = asyncio.create_task(b.submit(["heavy-a"], group=object()))
        await until(reached)  # the first heavy call is in its first step
        second = asyncio.create_task(b.submit(["heavy-b"], group=object()))
        light = asyncio.create_task(b.submit(["light"]))
        await asyncio.sleep(0)
        go.set()
        results = [await first, await second, await light]
        await b.close()
        return results

    results = asyncio.run(scenario())
    assert [r.outputs for r in results] == [["out:heavy-a"], ["out:heavy-b"], ["out:light"]]
    names = [name for name, _ in pipeline.log]
    assert names.index("heavy-b") > len(names) - 1 - names[::-1].index("heavy-a")  # b only after a ended
    assert names.index("light") < names.index("heavy-b") and ("light", 5) in pipeline.log[: names.index("heavy-b")]


@pytest.mark.parametrize("mode", ["iteration", "batch"])
def test_either_scheduling_mode_answers_concurrent_calls_with_the_batch_at_a_time_translations(
        tiny_translation_models: pathlib.Path, mode: str) -> None:
    pipeline = TranslationPipeline(load_version(tiny_translation_models / "transformer" / "1"))
    calls = [[TranslationRequest(t, MIXED[(i + j) % len(MIXED)]) for j, t in enumerate(TEXTS[i : i + 2])]
             for i in range(0, len(TEXTS), 2)]
    planned: list[int] = []
    plan = pipeline.plan

    def counting_plan(*args: Any, **kwargs: Any) -> Any:
        planned.append(1)
        return plan(*args, **kwargs)
    pipeline.plan = counting_plan  # type: ignore[method-assign]

    async def scenario() -> list[Any]:
        config = BatchConfig(max_queue_delay_ms=50.0, queue_delay_policy="fixed", decode_scheduling=mode)
        b: DynamicBatcher[TranslationRequest, Translation] = DynamicBatcher(
            pipeline, config, ThreadPoolExecutor(2), ServingMetrics())
        b.start()
        # Queued together within the fixed delay: one batch of the three calls, whatever the mode.
        results = await asyncio.gather(*(b.submit(call) for call in calls))
        await b.close()
        return [r.outputs for r in results]

    outputs = asyncio.run(scenario())
    expected = pipeline([r for call in calls for r in call])
    assert all(same(r, e) for r, e in zip([o for call in outputs for o in call], expected, strict=True))
    assert bool(planned) == (mode == "iteration")


def test_a_call_whose_deadline_passes_mid_decode_is_answered_deadline_exceeded_at_once() -> None:
    pipeline = GatedPipeline(steps=1000)
    reached, go = pipeline.gates.setdefault("slow", (threading.Event(), threading.Event()))

    async def scenario() -> tuple[BaseException | None, list[tuple[str, int]]]:
        config = BatchConfig(max_batch_size=32, max_queue_delay_ms=0.0, max_queue_texts=100)
        b: DynamicBatcher[str, str] = DynamicBatcher(pipeline, config, ThreadPoolExecutor(2),  # type: ignore[arg-type]
                                                     ServingMetrics())
        b.start()
        call = asyncio.create_task(b.submit(["slow"], timeout=0.2))
        await until(reached)
        await asyncio.sleep(0.25)  # the deadline is what is tested: let it pass while the unit is held
        go.set()
        error = None
        try:
            await call
        except DeadlineExpiredError as exc:
            error = exc
        await b.close()
        return error, list(pipeline.log)

    error, log = asyncio.run(scenario())
    assert isinstance(error, DeadlineExpiredError)
    assert len(log) < 1000  # its decoding stopped: nobody waits for it


def test_a_long_session_hands_its_inference_thread_to_other_models_batches_in_between() -> None:
    steps = 50_000  # a second or so of stand-in steps: far longer than one 50 ms slice
    pipeline = GatedPipeline(steps=steps)
    reached, go = pipeline.gates.setdefault("long", (threading.Event(), threading.Event()))
    executor = ThreadPoolExecutor(1)  # one inference thread, shared with another model

    async def scenario() -> int:
        config = BatchConfig(max_batch_size=32, max_queue_delay_ms=0.0, max_queue_texts=100)
        b: DynamicBatcher[str, str] = DynamicBatcher(pipeline, config, executor,  # type: ignore[arg-type]
                                                     ServingMetrics())
        b.start()
        call = asyncio.create_task(b.submit(["long"]))
        await until(reached)
        # Another model's batch queues for the same thread while the session holds it.
        other = asyncio.get_running_loop().run_in_executor(executor, lambda: len(pipeline.log))
        go.set()
        steps_when_other_ran = await other
        await call
        await b.close()
        return steps_when_other_ran

    assert asyncio.run(scenario()) < steps
