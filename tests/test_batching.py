"""The dynamic batcher, in-process with a stand-in pipeline: grouping, deadlines, cancellation, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from service.batching.batcher import DynamicBatcher
from service.batching.errors import DeadlineExpiredError, QueueFullError
from service.batching.grouping import Candidate, choose_batch
from service.metrics.registry import ServingMetrics
from service.model.model_config import BatchConfig
from service.model.timing import StageTimings

EVENT_TIMEOUT = 10  # seconds; a test that waits this long has failed


class RecordingPipeline:
    """Echoes each text with its version; records every batch. Clear `release` to hold the model:
    `entered` is set once a batch is inside it (taken off the queue), and it runs on when released."""

    def __init__(self, version: str = "1") -> None:
        self.model = SimpleNamespace(name="m", version=version)
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def estimate_tokens(self, text: str) -> int:
        return len(text)

    def __call__(self, texts: Sequence[str], timings: StageTimings | None = None) -> list[Any]:
        self.batches.append(list(texts))
        self.entered.set()
        if not self.release.wait(EVENT_TIMEOUT):
            raise AssertionError(f"the test never released the model within {EVENT_TIMEOUT} s")
        if timings is not None:
            timings.padding_ratio = 0.0
        return [f"{self.model.version}:{t}" for t in texts]


async def in_the_model(pipeline: RecordingPipeline) -> None:
    """Until a batch is inside the (held) model: the worker is busy and the queue holds what comes next."""
    if not await asyncio.to_thread(pipeline.entered.wait, EVENT_TIMEOUT):
        raise AssertionError(f"no batch reached the model within {EVENT_TIMEOUT} s")


async def until_queued(b: DynamicBatcher, texts: int) -> None:
    """Yield to the event loop until `texts` texts wait in the queue: each submit task queues its call in
    its first step, so this takes a step or two; no time passes."""
    for _ in range(100):
        if b.queued_texts == texts:
            return
        await asyncio.sleep(0)  # one event-loop step, not a wait for time
    raise AssertionError(f"{b.queued_texts} texts queued, expected {texts}")


def batcher(pipeline: RecordingPipeline, **config: Any) -> tuple[DynamicBatcher, ServingMetrics]:
    metrics = ServingMetrics()
    settings = {"max_batch_size": 32, "max_queue_delay_ms": 20.0, "max_queue_texts": 100,
                "batch_token_budget": 10_000, **config}
    b = DynamicBatcher(pipeline, BatchConfig(**settings), ThreadPoolExecutor(2), metrics)  # type: ignore[arg-type]
    b.start()
    return b, metrics


def test_grouping_takes_the_oldest_then_the_closest_in_length_within_the_limits() -> None:
    queued = [Candidate(1, 10), Candidate(1, 200), Candidate(1, 12), Candidate(1, 9), Candidate(1, 11)]
    assert choose_batch(queued, max_batch_size=3, token_budget=10_000) == [0, 3, 4]
    # The budget (texts x longest) keeps a 200-token text out of a batch of short ones.
    assert choose_batch(queued, max_batch_size=10, token_budget=100) == [0, 2, 3, 4]
    # The oldest call always runs, even alone above every limit: calls are never split.
    assert choose_batch([Candidate(50, 500)], max_batch_size=8, token_budget=10) == [0]


def test_calls_arriving_together_run_in_one_batch_and_get_their_own_results_back() -> None:
    pipeline = RecordingPipeline()

    async def scenario() -> list[Any]:
        b, metrics = batcher(pipeline)
        results = await asyncio.gather(*(b.submit([f"t{i}a", f"t{i}b"]) for i in range(5)))
        await b.close()
        return [results, metrics]

    results, metrics = asyncio.run(scenario())
    assert len(pipeline.batches) == 1 and len(pipeline.batches[0]) == 10
    assert [r.outputs for r in results] == [[f"1:t{i}a", f"1:t{i}b"] for i in range(5)]
    assert all(r.batch_texts == 10 for r in results)
    assert metrics.registry.get_sample_value("seqserve_batch_size_texts_count", {"model": "m"}) == 1
    assert metrics.registry.get_sample_value("seqserve_batch_size_texts_sum", {"model": "m"}) == 10


def test_a_batch_stops_at_max_batch_size() -> None:
    pipeline = RecordingPipeline()

    async def scenario() -> None:
        b, _ = batcher(pipeline, max_batch_size=4)
        await asyncio.gather(*(b.submit([f"t{i}"]) for i in range(10)))
        await b.close()

    asyncio.run(scenario())
    assert sorted(len(batch) for batch in pipeline.batches) == [2, 4, 4]


def test_adaptive_policy_runs_a_lone_call_at_once_but_waits_after_a_crowd() -> None:
    pipeline = RecordingPipeline()

    async def scenario() -> list[float]:
        b, _ = batcher(pipeline, max_queue_delay_ms=400.0)
        lone = await b.submit(["alone"])                                   # nothing ran before: no wait
        crowd = await asyncio.gather(*(b.submit([f"c{i}"]) for i in range(3)))  # queued together
        after_crowd = await b.submit(["next"])    # the last batch held 3 texts: waits for company
        lone_again = await b.submit(["again"])    # the last batch held 1: no wait again
        await b.close()
        return [lone.queue_seconds, max(r.queue_seconds for r in crowd), after_crowd.queue_seconds,
                lone_again.queue_seconds]

    lone, crowd, after_crowd, lone_again = asyncio.run(scenario())
    assert pipeline.batches == [["alone"], ["c0", "c1", "c2"], ["next"], ["again"]]
    assert lone < 0.2 and crowd < 0.2 and lone_again < 0.2
    assert after_crowd >= 0.35


def test_fixed_policy_always_waits_the_full_delay_for_company() -> None:
    pipeline = RecordingPipeline()

    async def scenario() -> float:
        b, _ = batcher(pipeline, max_queue_delay_ms=300.0, queue_delay_policy="fixed")
        result = await b.submit(["alone"])
        await b.close()
        return result.queue_seconds

    assert asyncio.run(scenario()) >= 0.25


def test_a_call_whose_deadline_passes_in_the_queue_is_never_run() -> None:
    pipeline = RecordingPipeline()
    pipeline.release.clear()  # the first batch blocks the model

    async def scenario() -> tuple[Any, ServingMetrics]:
        b, metrics = batcher(pipeline, max_queue_delay_ms=0.0)
        first = asyncio.ensure_future(b.submit(["blocking"]))
        await in_the_model(pipeline)
        late = asyncio.ensure_future(b.submit(["expires"], timeout=0.05))
        await until_queued(b, 1)
        # The deadline passing while the call waits is the behaviour under test: time must pass here.
        await asyncio.sleep(0.1)
        pipeline.release.set()
        await first
        with pytest.raises(DeadlineExpiredError):
            await late
        await b.close()
        return late, metrics

    _, metrics = asyncio.run(scenario())
    assert pipeline.batches == [["blocking"]]
    assert metrics.registry.get_sample_value("seqserve_batch_rejects_total", {"model": "m", "reason": "deadline"}) == 1


def test_a_cancelled_call_leaves_the_queue_without_running() -> None:
    pipeline = RecordingPipeline()
    pipeline.release.clear()

    async def scenario() -> ServingMetrics:
        b, metrics = batcher(pipeline, max_queue_delay_ms=0.0)
        first = asyncio.ensure_future(b.submit(["blocking"]))
        await in_the_model(pipeline)
        gone = asyncio.ensure_future(b.submit(["cancelled"]))
        kept = asyncio.ensure_future(b.submit(["kept"]))
        await until_queued(b, 2)
        gone.cancel()
        pipeline.release.set()
        await first
        assert (await kept).outputs == ["1:kept"]
        await b.close()
        return metrics

    metrics = asyncio.run(scenario())
    assert ["cancelled"] not in pipeline.batches and ["kept"] in pipeline.batches
    assert metrics.registry.get_sample_value("seqserve_batch_rejects_total", {"model": "m", "reason": "cancelled"}) == 1


def test_a_cancelled_call_frees_its_queue_room_while_the_worker_is_busy() -> None:
    """Clients that cancel and resubmit in a loop must not fill the queue with dead calls: the room is
    freed when the call is cancelled, not at the worker's next pass."""
    pipeline = RecordingPipeline()
    pipeline.release.clear()

    async def scenario() -> None:
        b, _ = batcher(pipeline, max_queue_delay_ms=0.0, max_queue_texts=4)
        first = asyncio.ensure_future(b.submit(["blocking"]))  # the worker is stuck on this one
        await in_the_model(pipeline)
        for round_number in range(5):  # 5 x 4 texts through a queue of 4, all cancelled
            gone = asyncio.ensure_future(b.submit(["a", "b", "c", str(round_number)]))
            await until_queued(b, 4)
            gone.cancel()
            await asyncio.sleep(0)  # one event-loop step: the cancellation reaches submit
            assert b.queued_texts == 0
        kept = asyncio.ensure_future(b.submit(["kept"]))  # not refused
        pipeline.release.set()
        await first
        assert (await kept).outputs == ["1:kept"]
        await b.close()

    asyncio.run(scenario())
    assert pipeline.batches == [["blocking"], ["kept"]]


def test_a_full_queue_refuses_at_once() -> None:
    pipeline = RecordingPipeline()
    pipeline.release.clear()

    async def scenario() -> tuple[float, ServingMetrics]:
        b, metrics = batcher(pipeline, max_queue_delay_ms=0.0, max_queue_texts=3)
        running = asyncio.ensure_future(b.submit(["running"]))
        await in_the_model(pipeline)  # taken off the queue, blocked in the model
        queued = asyncio.ensure_future(b.submit(["a", "b"]))
        await until_queued(b, 2)
        start = time.perf_counter()
        with pytest.raises(QueueFullError, match="queue full"):
            await b.submit(["c", "d"])
        refused_in = time.perf_counter() - start
        pipeline.release.set()
        await asyncio.gather(running, queued)
        await b.close()
        return refused_in, metrics

    refused_in, metrics = asyncio.run(scenario())
    assert refused_in < 0.05
    rejects = {"model": "m", "reason": "queue_full"}
    assert metrics.registry.get_sample_value("seqserve_batch_rejects_total", rejects) == 1


def test_a_swap_lets_the_running_batch_finish_on_the_old_version() -> None:
    old, new = RecordingPipeline("1"), RecordingPipeline("2")
    old.release.clear()

    async def scenario() -> tuple[Any, Any]:
        b, _ = batcher(old, max_queue_delay_ms=0.0)
        in_flight = asyncio.ensure_future(b.submit(["x"]))
        await in_the_model(old)
        b.pipeline = new  # what ModelManager does on a hot swap
        after = asyncio.ensure_future(b.submit(["y"]))
        old.release.set()
        results = await asyncio.gather(in_flight, after)
        await b.close()
        return results[0], results[1]

    first, second = asyncio.run(scenario())
    assert (first.outputs, first.model.version) == (["1:x"], "1")
    assert (second.outputs, second.model.version) == (["2:y"], "2")


def test_close_runs_what_is_queued_then_refuses_new_calls() -> None:
    pipeline = RecordingPipeline()

    async def scenario() -> None:
        b, _ = batcher(pipeline, max_queue_delay_ms=50.0)
        queued = asyncio.ensure_future(b.submit(["queued"]))
        await until_queued(b, 1)
        await b.close()
        assert (await queued).outputs == ["1:queued"]
        with pytest.raises(Exception, match="not being served"):
            await b.submit(["late"])

    asyncio.run(scenario())


class ThreadRecordingPipeline(RecordingPipeline):
    """Records which thread ran each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, texts: Sequence[str], timings: StageTimings | None = None) -> list[Any]:
        self.threads.append(threading.get_ident())
        return super().__call__(texts, timings)


class StoppableThreadRecordingPipeline(ThreadRecordingPipeline):
    takes_stop_signals = True

    def __call__(self, texts: Sequence[str], timings: StageTimings | None = None, stops: Any = None,
                 between_chunks: Any = None) -> list[Any]:
        return super().__call__(texts, timings)


def ran_in_loop(pipeline: ThreadRecordingPipeline, calls: list[list[str]], **config: Any) -> list[bool]:
    """Submit two lone calls one after the other, then `calls` at once; for each batch, whether it ran in the
    event loop's own thread. The limit is 100 ms unless given: a 1-token run is far below it however busy the
    machine, so the result does not depend on timing."""
    async def scenario() -> int:
        b, _ = batcher(pipeline, **{"max_queue_delay_ms": 0.0, "inline_max_ms": 100.0, **config})
        for text in ("one", "two"):
            assert (await b.submit([text])).outputs == [f"1:{text}"]
        results = await asyncio.gather(*(b.submit(texts) for texts in calls))
        assert [r.outputs for r in results] == [[f"1:{t}" for t in texts] for texts in calls]
        await b.close()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    return [thread == loop_thread for thread in pipeline.threads]


def test_a_lone_short_call_runs_in_the_event_loop_once_a_lone_run_was_timed() -> None:
    # The first lone run is timed in a thread; the next lone call is predicted well under the limit: in the loop.
    # Then two calls at once with max_batch_size 1: the first has the second queued behind it (a thread),
    # the second is alone again (the loop).
    assert ran_in_loop(ThreadRecordingPipeline(), [["a"], ["b"]], max_batch_size=1) == [False, True, False, True]


def test_a_batch_of_several_calls_runs_in_a_thread() -> None:
    assert ran_in_loop(ThreadRecordingPipeline(), [["a"], ["b"]]) == [False, True, False]


def test_inline_max_ms_0_and_chunked_pipelines_always_use_a_thread() -> None:
    assert ran_in_loop(ThreadRecordingPipeline(), [["a"]], inline_max_ms=0.0) == [False, False, False]
    assert ran_in_loop(StoppableThreadRecordingPipeline(), [["a"]]) == [False, False, False]


def test_a_long_call_is_not_run_in_the_loop_when_its_predicted_run_is_over_the_limit() -> None:
    # A lone run of 3 tokens takes more than a microsecond (one Python call), so 4 million tokens are
    # predicted at over a second, far over 100 ms.
    assert ran_in_loop(ThreadRecordingPipeline(), [["x" * 4_000_000]]) == [False, True, False]
