"""Dynamic batching for one model: calls queue, and run together as one pipeline call.

A worker task per model waits for the first call, then up to max_queue_delay_ms for more (or until
max_batch_size texts are queued; with the adaptive policy, until as many texts as the last batch
held: a lone client's call runs at once, a crowd's calls still wait for each other), picks a
length-grouped batch (grouping.py), drops calls whose client has gone or whose deadline has passed
without running them, and runs the batch in the inference thread pool (a lone short call, with nothing
else queued, in the event loop itself: _runs_inline). One batch per model runs at a time: while it runs,
the next one fills.

Hot swap: `pipeline` is replaced by the model manager in the event loop; a batch reads it once when
it starts, so calls already running finish on the old version and report the version that ran them.

Stopping work nobody waits for (issue #16): every queued call carries a stop signal, a thread-safe
flag set from the event loop when the call is cancelled (the client left, or grpc ended it at its
deadline) plus the deadline itself, read by the inference thread. A pipeline that declares
`takes_stop_signals` (translation, whose decoding can run for seconds) gets one signal per text and
checks it each decoder step, and a hook to call between its bounded chunks (and between two runs of a
batch cut by items_per_run, runs.py): the hook takes whatever
calls are queued at that moment (those of the default group: not another heavy call, which the
translation servicer gives a group of its own) and runs them right there, in the same thread, before
the next chunk. So a heavy batch delays light calls by about one chunk, still one batch of the model
at a time.

Every batch runs through runs.run_in_runs: at most `config.items_per_run` items per onnxruntime run
(1 for a dynamically quantized graph, set by the registry), so batch-mates never change an answer.

Iteration-level scheduling (`config.decode_scheduling` "iteration", the default, for a pipeline that
plans step work: translation): instead of one batch to its end, the worker runs a scheduling session
(step_scheduler.py) in the inference pool while the model has work. It takes batches off this queue as
they arrive, and interleaves their decoder steps, answering each call as soon as its own texts are done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from service.batching.errors import BatcherClosedError, DeadlineExpiredError, QueueFullError
from service.batching.grouping import Candidate, choose_batch
from service.batching.runs import NO_LIMIT, run_in_runs
from service.batching.step_scheduler import Admission, ScheduledCall, StepScheduler
from service.metrics.registry import ServingMetrics
from service.model.loaded_model import LoadedModel
from service.model.model_config import BatchConfig
from service.model.pipeline import Pipeline, ScheduledPipeline, StoppablePipeline, is_scheduled, is_stoppable
from service.model.timing import StageTimings

log = logging.getLogger(__name__)

# A scheduling session gives its inference thread back this often (step_scheduler.py), so other models'
# batches waiting in the pool run in between: at most this much later than with a free thread, at the cost
# of one hand-off per slice.
SESSION_SLICE_SECONDS = 0.05

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class BatchResult(Generic[ResultT]):
    outputs: list[ResultT]   # one per text of the call, in order
    model: LoadedModel       # the version that ran it
    batch_texts: int         # texts in the batch the call ran in
    queue_seconds: float


@dataclass(eq=False)  # queued calls are removed by identity
class _Queued(Generic[RequestT, ResultT]):
    texts: Sequence[RequestT]
    tokens: int
    deadline: float | None   # loop.time() after which the call is dropped
    future: asyncio.Future[BatchResult[ResultT]]
    group: Hashable = None   # only calls of one group share a batch (see grouping.Candidate)
    enqueued: float = field(default_factory=time.monotonic)
    stop_at: float | None = None  # time.monotonic() of the deadline, for the inference thread
    # Set once, from the event loop, when the call is cancelled; read by the inference thread. A plain
    # attribute is enough (one store, read under the GIL); a threading.Event per call was a lock and a
    # condition built for every call.
    cancelled: bool = False

    def stopped(self) -> bool:
        """Thread-safe: the call was cancelled or its deadline has passed; its texts need no more work."""
        return self.cancelled or (self.stop_at is not None and time.monotonic() >= self.stop_at)


class DynamicBatcher(Generic[RequestT, ResultT]):
    def __init__(
        self, pipeline: Pipeline[RequestT, ResultT] | StoppablePipeline[RequestT, ResultT], config: BatchConfig,
        executor: Executor, metrics: ServingMetrics, label: str = "",
    ) -> None:
        self.pipeline = pipeline
        # Swapped with the pipeline (the registry sets items_per_run per version); a batch reads both once.
        self.config = config
        self._executor = executor
        self._metrics = metrics
        # The `model` label of the batching metrics: the model's name, unless two batchers serve one
        # model (the task API's and a V2 graph's), which must not overwrite each other's queue depth.
        self._name = label or pipeline.model.name
        self._queue: deque[_Queued[RequestT, ResultT]] = deque()
        self._queued_texts = 0
        self._wakeup = asyncio.Event()
        # Queued texts at which a submit wakes the worker: 1 while it waits for a first call, the wait
        # target while it waits for company. Waking it on every arrival only to go back to sleep cost each
        # call a wake-up and a new timed wait (a task and a timer) under load.
        self._wake_at = 1
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        self._depth = metrics.queue_depth.labels(self._name)
        self._depth.set(0)
        # Looked up once: labels() on every batch was measurable work on the event loop.
        self._batch_size = metrics.batch_size.labels(self._name)
        self._padding_ratio = metrics.padding_ratio.labels(self._name)
        # Texts in the last batch run: the adaptive policy's guess of how many calls are coming.
        # Starts at 1, so the very first call does not wait; load raises it within one batch.
        self._last_batch_texts = 1
        # Seconds per estimated token of this pipeline's last lone run (a batch of one call), for the inline
        # rule (_runs_inline); None until a lone run of the pipeline now serving was timed.
        self._lone_run: tuple[object, float] | None = None
        # Set (event loop) when a call is queued; read by a scheduling session's thread, so it looks at
        # the queue only when something arrived.
        self._arrived = threading.Event()

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self._name}")

    async def close(self) -> None:
        """Stop taking calls; the ones already queued still run (no accepted call is lost)."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker

    async def submit(
        self, texts: Sequence[RequestT], timeout: float | None = None, group: Hashable = None
    ) -> BatchResult[ResultT]:
        """Queue one call's texts and wait for their outputs. `timeout`: the client's remaining deadline;
        `group`: the call only shares a batch with calls of the same group."""
        if self._closed:
            raise BatcherClosedError(f"model {self._name} is not being served")
        if self._queued_texts + len(texts) > self.config.max_queue_texts:
            self._metrics.batch_rejects.labels(self._name, "queue_full").inc()
            raise QueueFullError(
                f"model {self._name}: queue full ({self._queued_texts} texts waiting, limit "
                f"{self.config.max_queue_texts}); retry later"
            )
        loop = asyncio.get_running_loop()
        item: _Queued[RequestT, ResultT] = _Queued(
            texts=texts,
            tokens=max(self.pipeline.estimate_tokens(t) for t in texts),
            deadline=None if timeout is None else loop.time() + timeout,
            future=loop.create_future(),
            group=group,
            stop_at=None if timeout is None else time.monotonic() + timeout,
        )
        self._queue.append(item)
        self._queued_texts += len(texts)
        self._depth.set(self._queued_texts)
        if self._queued_texts >= self._wake_at:
            self._wakeup.set()
        self._arrived.set()
        # If the client cancels (or grpc ends the call at its deadline), this await is cancelled and
        # so is item.future. A call still waiting leaves the queue at once: it must not hold queue room
        # until the worker's next pass (clients that cancel and resubmit in a loop would otherwise fill
        # the queue with dead calls and get live ones refused). A call already taken into a batch is
        # no longer queued; its result is simply dropped.
        try:
            return await item.future
        except asyncio.CancelledError:
            item.cancelled = True  # a batch decoding it stops at its next step
            self._forget_cancelled(item)
            raise

    def _forget_cancelled(self, item: _Queued[RequestT, ResultT]) -> None:
        try:
            self._queue.remove(item)
        except ValueError:  # already taken into a batch (or dropped)
            return
        self._metrics.batch_rejects.labels(self._name, "cancelled").inc()
        self._queued_texts -= len(item.texts)
        self._depth.set(self._queued_texts)

    def _drop_dead(self, now: float) -> None:
        kept: deque[_Queued[RequestT, ResultT]] = deque()
        for item in self._queue:
            if item.future.done():  # cancelled by its client
                self._metrics.batch_rejects.labels(self._name, "cancelled").inc()
            elif item.deadline is not None and now >= item.deadline:
                self._metrics.batch_rejects.labels(self._name, "deadline").inc()
                item.future.set_exception(DeadlineExpiredError(f"deadline passed in the queue of model {self._name}"))
            else:
                kept.append(item)
                continue
            self._queued_texts -= len(item.texts)
        self._queue = kept
        self._depth.set(self._queued_texts)

    def _wait_target(self) -> int:
        """Texts worth waiting for: max_batch_size, or (adaptive) what the last batch held."""
        if self.config.queue_delay_policy == "fixed":
            return self.config.max_batch_size
        return min(self.config.max_batch_size, self._last_batch_texts)

    async def _wait_for_batch(self) -> None:
        """Until the wait target is queued or the oldest call has waited max_queue_delay_ms.

        One timer per batch sets the wake-up at the fill-by time; submit sets it once the target is queued
        (close() at once). A call cancelled meanwhile only lowers the count, so the loop re-checks."""
        loop = asyncio.get_running_loop()
        fill_by = loop.time() + self.config.max_queue_delay_ms / 1000 - (time.monotonic() - self._queue[0].enqueued)
        target = self._wait_target()
        if self._queued_texts >= target or fill_by <= loop.time():
            # One event-loop step first: calls whose handlers are already scheduled (a crowd the loop fell
            # behind on, e.g. while it ran a lone call inline) queue now and share this batch.
            await asyncio.sleep(0)
            return
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._wakeup.set()

        self._wake_at = target
        timer = loop.call_at(fill_by, expire)
        try:
            while self._queued_texts < target and not self._closed and not expired:
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            timer.cancel()
            self._wake_at = 1

    def _take_batch(self, shared_only: bool = False, own_only: bool = False) -> list[_Queued[RequestT, ResultT]]:
        """(Event loop) Drop dead calls, then take the next batch off the queue (empty if none).
        `shared_only`: only calls of the default group (None); calls that asked for a batch of their
        own (a translation too big for one chunk) are left for the worker's regular turn. `own_only`:
        only those."""
        self._drop_dead(asyncio.get_running_loop().time())
        queued = [q for q in self._queue if (q.group is None) != own_only] if shared_only or own_only \
            else list(self._queue)
        if not queued:
            return []
        chosen = choose_batch(
            [Candidate(len(q.texts), q.tokens, q.group) for q in queued],
            self.config.max_batch_size, self.config.batch_token_budget,
        )
        batch = [queued[i] for i in chosen]
        taken = {id(q) for q in batch}
        self._queue = deque(q for q in self._queue if id(q) not in taken)
        self._queued_texts -= sum(len(q.texts) for q in batch)
        self._depth.set(self._queued_texts)
        return batch

    async def _run(self) -> None:
        while True:
            while not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_batch()
            if self.config.decode_scheduling == "iteration" and is_scheduled(self.pipeline):
                await self._run_scheduled(self.pipeline)
                continue
            batch = self._take_batch()
            if batch:
                await self._run_batch(batch)

    def _begin(self, batch: list[_Queued[RequestT, ResultT]], model: LoadedModel) -> tuple[list[RequestT], float]:
        """(Event loop) The batch's texts, and its start time, after recording its queue metrics."""
        texts = [text for item in batch for text in item.texts]
        self._last_batch_texts = len(texts)
        now = time.monotonic()
        for item in batch:
            self._metrics.observe_queue(model, now - item.enqueued)
        self._batch_size.observe(len(texts))
        return texts, now

    async def _run_batch(self, batch: list[_Queued[RequestT, ResultT]]) -> None:
        pipeline = self.pipeline  # read once: a swap during the run does not affect this batch
        items_per_run = self._items_per_run()  # read with it: the limit belongs to the version
        texts, now = self._begin(batch, pipeline.model)
        timings = StageTimings()
        hook = self._between_chunks(pipeline, items_per_run, asyncio.get_running_loop())
        job = functools.partial(self._call_pipeline, pipeline, items_per_run, batch, texts, timings, hook)
        lone = len(batch) == 1
        started = time.perf_counter()
        try:
            if lone and self._runs_inline(pipeline, batch[0]):
                outputs = job()  # in the event loop: see _runs_inline
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except Exception as exc:  # handed to every caller; CallRunner logs it and answers INTERNAL
            self._settle(batch, pipeline.model, len(texts), now, timings, None, exc)
            return
        if lone:
            self._lone_run = (pipeline, (time.perf_counter() - started) / max(1, batch[0].tokens * len(texts)))
        self._settle(batch, pipeline.model, len(texts), now, timings, outputs, None)

    def _runs_inline(self, pipeline: object, call: _Queued[RequestT, ResultT]) -> bool:
        """Whether a lone call runs in the event loop rather than an inference thread.

        The hand-off to a thread and back (a thread wake-up each way, the loop woken through its self-pipe)
        cost ~0.15 ms of CPU per batch here, half the model run of a short text, and a lone client pays it on
        every call. Running the call in the loop holds the loop for that run, so only when nobody waits for
        this model (nothing queued), the pipeline is not a chunked one (translation decodes for seconds), and
        this pipeline's last lone run predicts this call's run (by its estimated tokens) within
        inline_max_ms. Other calls arriving meanwhile wait at most that long; under load batches hold
        several calls and go to the threads as before."""
        limit = self.config.inline_max_ms
        if limit <= 0 or self._queue or is_stoppable(pipeline) or self._lone_run is None:
            return False
        measured, seconds_per_token = self._lone_run
        return measured is pipeline and seconds_per_token * call.tokens * len(call.texts) * 1000 <= limit

    def _items_per_run(self) -> int:
        """The limit the registry resolved into the config (runs.items_per_run_for); 0 is no limit."""
        return max(NO_LIMIT, self.config.items_per_run)

    @staticmethod
    def _call_pipeline(
        pipeline: Pipeline[RequestT, ResultT] | StoppablePipeline[RequestT, ResultT], items_per_run: int,
        batch: list[_Queued[RequestT, ResultT]], texts: list[RequestT], timings: StageTimings,
        hook: Callable[[], None] | None,
    ) -> list[ResultT | None]:
        """(Inference thread) Run the pipeline in runs of at most items_per_run items, with the calls'
        stop signals and the between-chunks hook if it takes them."""
        if not is_stoppable(pipeline):
            return run_in_runs(pipeline, texts, items_per_run, timings)
        stops = [item.stopped for item in batch for _ in item.texts]
        return run_in_runs(pipeline, texts, items_per_run, timings, stops=stops, between_chunks=hook)

    def _between_chunks(
        self, pipeline: Pipeline[RequestT, ResultT] | StoppablePipeline[RequestT, ResultT], items_per_run: int,
        loop: asyncio.AbstractEventLoop,
    ) -> Callable[[], None]:
        """The hook a chunked pipeline calls in the inference thread between two chunks: it runs the
        calls queued meanwhile (one batch, taken in the event loop) before the heavy batch goes on."""
        async def take() -> tuple[list[_Queued[RequestT, ResultT]], list[RequestT], float] | None:
            if self.pipeline is not pipeline:  # swapped: queued calls wait for the new version's batch
                return None
            batch = self._take_batch(shared_only=True)
            return (batch, *self._begin(batch, pipeline.model)) if batch else None

        def hook() -> None:
            try:
                taken = asyncio.run_coroutine_threadsafe(take(), loop).result(timeout=10)
            except (RuntimeError, concurrent.futures.TimeoutError):  # the loop is closing: carry on
                return
            if taken is None:
                return
            batch, texts, now = taken
            timings = StageTimings()
            outputs: list[ResultT | None] | None
            try:  # no hook of its own: interleaved batches do not nest
                outputs, error = self._call_pipeline(pipeline, items_per_run, batch, texts, timings, None), None
            except Exception as exc:
                outputs, error = None, exc
            loop.call_soon_threadsafe(self._settle, batch, pipeline.model, len(texts), now, timings, outputs, error)

        return hook

    def _settle(self, batch: list[_Queued[RequestT, ResultT]], model: LoadedModel, batch_texts: int, now: float,
                timings: StageTimings, outputs: list[ResultT | None] | None, error: Exception | None) -> None:
        """(Event loop) Hand each call its outputs, or the batch's error."""
        if error is None and outputs is not None:
            self._observe_stages(model, timings)
        start = 0
        for item in batch:
            end = start + len(item.texts)
            self._settle_call(item, model, batch_texts, now, None if outputs is None else outputs[start:end], error)
            start = end

    def _observe_stages(self, model: LoadedModel, timings: StageTimings) -> None:
        self._metrics.observe_stages(model, timings)
        if timings.padding_ratio is not None:
            self._padding_ratio.observe(timings.padding_ratio)

    def _settle_call(self, item: _Queued[RequestT, ResultT], model: LoadedModel, batch_texts: int, now: float,
                     outputs: list[ResultT | None] | None, error: Exception | None) -> None:
        """(Event loop) Hand one call its outputs, or the error."""
        if item.future.done():  # a client that left meanwhile just gets nothing
            return
        if error is not None or outputs is None:
            item.future.set_exception(error or RuntimeError("pipeline returned nothing"))
        elif item.stopped() and any(output is None for output in outputs):  # stopped mid-decode
            self._metrics.batch_rejects.labels(self._name, "deadline").inc()
            item.future.set_exception(DeadlineExpiredError(
                f"deadline passed while model {self._name} ran the call; its decoding stopped"))
        else:  # a call not stopped has every output (only a fired stop signal leaves None)
            mine = cast(list[ResultT], outputs)
            item.future.set_result(BatchResult(mine, model, batch_texts, now - item.enqueued))

    # -- iteration-level scheduling (step_scheduler.py) ----------------------------------------------
    async def _run_scheduled(self, pipeline: ScheduledPipeline[RequestT, ResultT]) -> None:
        """One scheduling session in the inference pool, until the model has no work it may take. A
        swapped pipeline takes nothing more: its session finishes what it holds, the next one serves."""
        loop = asyncio.get_running_loop()
        items_per_run = self._items_per_run()
        self._arrived.set()  # whatever is queued now is the session's first admission

        async def take(light_room: bool, heavy_room: bool) -> tuple[list[_Queued[RequestT, ResultT]],
                                                                    list[RequestT], float] | None:
            if self.pipeline is not pipeline:
                return None
            batch = self._take_batch(shared_only=not heavy_room, own_only=not light_room)
            # More may fit beside this one: look again next turn. Calls left only for a class without room
            # are looked at when room is freed, not at every step (a round trip to the event loop each).
            if batch and self._queue:
                self._arrived.set()
            return (batch, *self._begin(batch, pipeline.model)) if batch else None

        def admit(light_room: bool, heavy_room: bool, retry: bool) -> Admission[ResultT] | None:
            """(Scheduler thread) The next batch off the queue, planned; None if nothing may be taken."""
            if not (retry or self._arrived.is_set()):
                return None
            self._arrived.clear()
            try:
                taken = asyncio.run_coroutine_threadsafe(take(light_room, heavy_room), loop).result(timeout=10)
            except (RuntimeError, concurrent.futures.TimeoutError):  # the loop is closing: take nothing more
                return None
            if taken is None:
                return None
            batch, texts, now = taken
            return self._admission(pipeline, items_per_run, batch, texts, now, loop)

        scheduler: StepScheduler[ResultT] = StepScheduler(admit, pipeline.chunk_bytes)
        try:
            # In slices: between two, other models' batches queued in the inference pool get the thread (a
            # session lasts as long as translation work keeps coming; held whole, it could starve them).
            while await loop.run_in_executor(self._executor, scheduler.run, SESSION_SLICE_SECONDS):
                pass
        except Exception:  # its calls got the error; the worker lives on for the next calls
            log.exception("model %s: the scheduling session failed", self._name)

    def _admission(self, pipeline: ScheduledPipeline[RequestT, ResultT], items_per_run: int,
                   batch: list[_Queued[RequestT, ResultT]], texts: list[RequestT], now: float,
                   loop: asyncio.AbstractEventLoop) -> Admission[ResultT]:
        """(Scheduler thread) A taken batch as the scheduler's admission: its calls, answered each through
        the event loop, and the units the pipeline plans for its texts (a planning error fails them all)."""
        model = pipeline.model
        calls: list[ScheduledCall[ResultT]] = []
        start = 0
        for item in batch:
            def deliver(outputs: list[ResultT | None] | None, error: Exception | None,
                        item: _Queued[RequestT, ResultT] = item) -> None:
                loop.call_soon_threadsafe(self._settle_call, item, model, len(texts), now, outputs, error)
            calls.append(ScheduledCall(start, len(item.texts), item.stopped, deliver))
            start += len(item.texts)
        timings = StageTimings()

        def finish(timings: StageTimings) -> None:
            loop.call_soon_threadsafe(self._observe_stages, model, timings)

        heavy = any(item.group is not None for item in batch)
        admission: Admission[ResultT] = Admission(calls, deque(), heavy, timings, finish)
        try:
            admission.units.extend(pipeline.plan(texts, items_per_run, timings))
        except Exception as error:  # e.g. a tokenizer failure: every call of the batch gets it, as before
            for call in calls:
                call.delivered = True
                call.deliver(None, error)
        return admission
