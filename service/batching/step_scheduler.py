"""Iteration-level scheduling (issue #20 item 3): batches of a scheduled pipeline (translation) decode a
step at a time, interleaved, instead of one batch to its end.

Runs in one inference thread for as long as the model has work. Each turn it takes newly queued calls
off the batcher's queue as an *admission* (a batch chosen as the batcher always chooses, planned by the
pipeline into StepWork units: the chunks batch-at-a-time decoding would run), then advances one unit by
one step: the encoder for a unit that is starting, else one decoder step over its live rows. Which
admission goes next is weighted-fair in CPU time: the one that has used the least so far, a light
admission's CPU counted at 1/LIGHT_WEIGHT (a new admission starts level with the least-served one, so it
gets no burst of catch-up). So a heavy call slows a light one by a bounded factor instead of making it
wait for its chunks, and each call is answered as soon as its own texts are done, not when its batch
ends.

Within an admission the units run one after the other, as in batch-at-a-time decoding. Memory is
bounded per class, as before: *heavy* admissions (a call needing more than one chunk, which the
translation servicer queues in a group of its own) and *light* ones (everything else) may each hold
units of at most `budget_bytes` estimated memory at once (the pipeline's chunk bytes); a unit that
alone exceeds it (one beam-16 text of 255 + 256 tokens) runs only when its class has nothing else in
flight. Before, one chunk ran while light calls ran between two chunks: the same bound.

Why units and not rows: a decoder-step graph of the translation contract (docs/translation-graphs.md)
takes no per-row position or cache mask; the Transformer's step position is its cache length, so rows
at different steps (or with different source widths) cannot share one step call without changing the
graphs. Each unit's rows do share every step call, and rows leave it as they finish or are stopped,
exactly as in batch-at-a-time decoding, so every output is bit for bit the batch-at-a-time one.

Stopping: each unit checks its rows' stop signals before every step (as before); a call whose stop has
fired is answered at once (its texts' outputs are None: the batcher answers DEADLINE_EXCEEDED or nobody
listens), and units none of whose texts are live are never started.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.model.pipeline import StepWork, Stop
from service.model.timing import StageTimings

ResultT = TypeVar("ResultT")

# Admissions in flight per class. Two light ones: a call arriving while a long light batch decodes
# starts at once instead of waiting for it, and a third waits so that calls arriving meanwhile gather
# into one batch (many small admissions would each pay a step call per step). One heavy one: another
# heavy call waits for its turn, as before.
LIGHT_ADMISSIONS = 2
HEAVY_ADMISSIONS = 1
# While both classes have work, a light admission gets this many CPU seconds per second of a heavy one's:
# a light call is slowed by at most 1 + 1/LIGHT_WEIGHT (plus the heavy step running when it arrived), a
# heavy one by at most 1 + LIGHT_WEIGHT per light admission, and only while light work keeps coming.
# Reason (docs/serving.md): at equal shares a 64-text beam-16 call left the light calls' p99 at 4.0x their
# idle p99 in one run (the goal: 3x); a light call is a few milliseconds of CPU.
LIGHT_WEIGHT = 4.0


@dataclass(eq=False)
class ScheduledCall(Generic[ResultT]):
    """One call of an admission: its items are admission items start .. start + size - 1."""

    start: int
    size: int
    stopped: Stop
    # Called once, in the scheduler thread: the call's outputs (None where a stop fired), or the error.
    deliver: Callable[[list[ResultT | None] | None, Exception | None], None]
    delivered: bool = False


@dataclass(eq=False)
class Admission(Generic[ResultT]):
    """A batch taken off the queue: its calls, and the units its items were planned into."""

    calls: list[ScheduledCall[ResultT]]
    units: deque[StepWork[ResultT]]
    heavy: bool
    timings: StageTimings
    # Called once when every unit has run (or failed), in the scheduler thread: stage metrics.
    finish: Callable[[StageTimings], None]
    stops: list[Stop] = field(default_factory=list)   # per admission item
    outputs: list[ResultT | None] = field(default_factory=list)
    resolved: list[bool] = field(default_factory=list)  # decoded, or never will be
    current: StepWork[ResultT] | None = None
    spent: float = 0.0   # CPU seconds of this thread spent on it, divided by its weight: the fairness measure

    @property
    def weight(self) -> float:
        return 1.0 if self.heavy else LIGHT_WEIGHT

    def __post_init__(self) -> None:
        items = sum(call.size for call in self.calls)
        self.stops = [call.stopped for call in self.calls for _ in range(call.size)]
        self.outputs = [None] * items
        self.resolved = [False] * items

    @property
    def done(self) -> bool:
        return self.current is None and not self.units


# take(light_room, heavy_room, retry) -> an admission or None. `retry`: look at the queue even if no call
# arrived since the last look (room has just been freed).
Take = Callable[[bool, bool, bool], "Admission[Any] | None"]


class StepScheduler(Generic[ResultT]):
    """One model's scheduling session: `run()` until no admission is left and the queue has nothing
    it may take, in slices that hand the inference thread back in between (the batcher's choice)."""

    def __init__(self, take: Take, budget_bytes: int, clock: Callable[[], float] = time.thread_time) -> None:
        self._take = take
        self._budget = budget_bytes
        self._clock = clock  # CPU time of this thread: other processes' load does not count against a call
        self._admissions: list[Admission[ResultT]] = []
        self._in_flight = {False: 0, True: 0}  # estimated bytes of the running units, by heaviness
        self._room_freed = True  # look at the queue once at the start whatever arrived

    def run(self, slice_seconds: float | None = None) -> bool:
        """Take and advance work until none is left (False), or until `slice_seconds` have passed (True:
        call again, from any thread, to go on; the admissions in flight wait in this object meanwhile)."""
        ends = None if slice_seconds is None else time.monotonic() + slice_seconds
        try:
            while True:
                self._admit()
                self._answer_stopped_calls()
                admission = self._next()
                if admission is None:
                    if self._admissions:  # cannot happen: a class with nothing in flight always starts a unit
                        raise RuntimeError("step scheduler: admissions left but none can run")
                    return False
                self._advance(admission)
                if ends is not None and time.monotonic() >= ends:
                    self._room_freed = True  # the queue may have changed while another job had the thread
                    return True
        except Exception as error:  # a defect here: no call is left waiting for an answer that never comes
            for admission in list(self._admissions):
                self._fail(admission, error)
            raise

    # -- admissions ---------------------------------------------------------------------------------
    def _admit(self) -> None:
        while True:
            light = sum(1 for a in self._admissions if not a.heavy)
            heavy = len(self._admissions) - light
            light_room, heavy_room = light < LIGHT_ADMISSIONS, heavy < HEAVY_ADMISSIONS
            if not (light_room or heavy_room):
                return
            admission = self._take(light_room, heavy_room, self._room_freed)
            self._room_freed = False
            if admission is None:
                return
            # Level with the least-served admission in flight: fair from now on, no catch-up burst.
            admission.spent = min((a.spent for a in self._admissions), default=0.0)
            self._admissions.append(admission)

    def _answer_stopped_calls(self) -> None:
        """A call whose client left or whose deadline passed is answered now, not when its units end."""
        for admission in self._admissions:
            for call in admission.calls:
                if not call.delivered and call.stopped():
                    self._deliver(admission, call)

    # -- choosing and running -------------------------------------------------------------------------
    def _next(self) -> Admission[ResultT] | None:
        """The admission with the least CPU time spent that can run a step now (starting its next unit
        if its class has room for it)."""
        for admission in sorted(self._admissions, key=lambda a: a.spent):
            try:
                if admission.current is not None or self._start_next_unit(admission):
                    return admission
            except Exception as error:  # a unit that cannot start fails its own calls only
                self._fail(admission, error)
                continue
            if admission.done:
                self._close(admission)
        return None

    def _start_next_unit(self, admission: Admission[ResultT]) -> bool:
        while admission.units:
            unit = admission.units[0]
            used = self._in_flight[admission.heavy]
            if used and used + unit.bytes > self._budget:
                return False  # waits for its class to have room
            admission.units.popleft()
            if unit.start(admission.stops):
                admission.current = unit
                self._in_flight[admission.heavy] += unit.bytes
                return True
            self._resolve(admission, unit.items)  # every text's call has gone: nothing to decode
        return False

    def _advance(self, admission: Admission[ResultT]) -> None:
        unit = admission.current
        assert unit is not None
        began = self._clock()
        try:
            with admission.timings.stage("inference"):
                unit.advance()
            if unit.finished:
                with admission.timings.stage("postprocess"):
                    for index, output in unit.results().items():
                        admission.outputs[index] = output
        except Exception as error:  # handed to every call of the admission, as a failed batch is
            admission.spent += (self._clock() - began) / admission.weight
            self._fail(admission, error)
            return
        admission.spent += (self._clock() - began) / admission.weight
        if unit.finished:
            self._end_unit(admission, unit)
            self._resolve(admission, unit.items)
            if admission.done:
                self._close(admission)

    def _end_unit(self, admission: Admission[ResultT], unit: StepWork[ResultT]) -> None:
        admission.current = None
        self._in_flight[admission.heavy] -= unit.bytes

    def _resolve(self, admission: Admission[ResultT], items: Sequence[int]) -> None:
        for index in items:
            admission.resolved[index] = True
        for call in admission.calls:
            if not call.delivered and all(admission.resolved[call.start : call.start + call.size]):
                self._deliver(admission, call)

    def _deliver(self, admission: Admission[ResultT], call: ScheduledCall[ResultT],
                 error: Exception | None = None) -> None:
        call.delivered = True
        call.deliver(None if error else admission.outputs[call.start : call.start + call.size], error)

    def _fail(self, admission: Admission[ResultT], error: Exception) -> None:
        if admission.current is not None:
            self._end_unit(admission, admission.current)
        admission.units.clear()
        for call in admission.calls:
            if not call.delivered:
                self._deliver(admission, call, error)
        self._close(admission)

    def _close(self, admission: Admission[ResultT]) -> None:
        if admission in self._admissions:
            self._admissions.remove(admission)
            self._room_freed = True
            for call in admission.calls:  # every item resolved; a call is never left unanswered
                if not call.delivered:
                    self._deliver(admission, call)
            admission.finish(admission.timings)
