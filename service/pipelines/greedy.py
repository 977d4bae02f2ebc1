"""Greedy decoding over the step graphs: batched (finished rows leave the batch) and streaming.

`stops` (one callable per source row, true once the row's call is cancelled or past its deadline) is
checked before every step: a stopped row leaves the batch like a finished one, so a call whose client
has gone costs at most one more step, and the other rows go on unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from service.pipelines.hypothesis import Hypothesis, length_penalty
from service.pipelines.output_constraints import UNCONSTRAINED, OutputConstraints
from service.pipelines.seq2seq_runtime import DecoderState, StepRunner


def greedy_search(
    runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: np.ndarray,
    alpha: float = 0.0, with_attention: bool = False, stops: Sequence[Callable[[], bool]] | None = None,
    constraints: OutputConstraints = UNCONSTRAINED,
) -> list[Hypothesis]:
    """One hypothesis per row; row i stops at [EOS] or after max_steps[i] tokens. Encoder runs once.
    A row stopped by `stops` keeps the tokens it had (its caller discards them)."""
    search = GreedySearch(runner, src_ids, src_mask, max_steps, alpha, with_attention, stops, constraints)
    while not search.finished:
        search.advance()
    return search.results()


class GreedySearch:
    """Greedy decoding as a step machine: each `advance()` runs the encoder (the first) or one decoder
    step, so a scheduler can interleave several searches step by step (service/batching/step_scheduler.py);
    `greedy_search` runs one to the end. The same code either way: outputs cannot differ."""

    def __init__(
        self, runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: np.ndarray,
        alpha: float = 0.0, with_attention: bool = False, stops: Sequence[Callable[[], bool]] | None = None,
        constraints: OutputConstraints = UNCONSTRAINED,
    ) -> None:
        self.runner, self.src_ids, self.src_mask, self.max_steps = runner, src_ids, src_mask, max_steps
        self.alpha, self.with_attention, self.stops, self.constraints = alpha, with_attention, stops, constraints
        batch = src_ids.shape[0]
        self.state: DecoderState | None = None  # encoded on the first advance
        self.active = np.arange(batch)  # original row of each row still decoding
        self.tokens = np.full(batch, runner.bos_id, dtype=np.int64)
        self.outputs: list[list[int]] = [[] for _ in range(batch)]
        self.log_probs_sum = np.zeros(batch)
        self.token_log_probs: list[list[float]] = [[] for _ in range(batch)]
        self.attention: list[list[np.ndarray]] = [[] for _ in range(batch)]
        self.ended = np.zeros(batch, dtype=bool)
        self.step = 0
        self.stopped = False  # every row's call has gone

    @property
    def finished(self) -> bool:
        return self.stopped or not len(self.active)

    def advance(self) -> None:
        """The encoder on the first call, then one decoder step over the rows still decoding."""
        if self.state is None:
            self.state = self.runner.encode(self.src_ids, self.src_mask)
            return
        state, active, tokens = self.state, self.active, self.tokens
        if self.stops is not None:
            live = [position for position, row in enumerate(active) if not self.stops[int(row)]()]
            if len(live) < len(active):
                if not live:
                    self.stopped = True
                    return
                keep_rows = np.asarray(live, dtype=np.int64)
                state, active, tokens = state.take(keep_rows), active[keep_rows], tokens[keep_rows]
        log_probs, cross, state = self.runner.step(tokens, state)
        self.constraints.apply(log_probs, [self.outputs[int(row)] for row in active], self.runner.eos_id)
        chosen = log_probs.argmax(axis=-1)
        chosen_log_probs = log_probs[np.arange(len(active)), chosen]
        self.log_probs_sum[active] += chosen_log_probs
        self.step += 1
        keep = []
        for position, row in enumerate(active):
            token = int(chosen[position])
            self.token_log_probs[row].append(float(chosen_log_probs[position]))
            if token == self.runner.eos_id:
                self.ended[row] = True
                continue
            self.outputs[row].append(token)
            if self.with_attention:
                self.attention[row].append(cross[position])
            if self.step < self.max_steps[row]:
                keep.append(position)
        if len(keep) < len(active):  # finished rows leave the batch: later steps are cheaper
            keep_rows = np.asarray(keep, dtype=np.int64)
            state, active, chosen = state.take(keep_rows), active[keep_rows], chosen[keep_rows]
        self.state, self.active, self.tokens = state, active, chosen.astype(np.int64)

    def results(self) -> list[Hypothesis]:
        results = []
        width = self.src_ids.shape[1]
        for index in range(self.src_ids.shape[0]):
            length = len(self.outputs[index]) + int(self.ended[index])
            attention = self.attention[index]
            results.append(Hypothesis(
                token_ids=self.outputs[index], log_prob=float(self.log_probs_sum[index]), length=length,
                score=float(self.log_probs_sum[index]) / length_penalty(length, self.alpha),
                attention=np.stack(attention) if self.with_attention and attention
                else (np.zeros((0, width), np.float32) if self.with_attention else None),
                token_log_probs=self.token_log_probs[index],
            ))
        return results


@dataclass(frozen=True)
class StreamStep:
    token_id: int           # runner.eos_id on the step that ends the output
    log_prob: float         # of that token
    attention: np.ndarray   # [src_len] cross-attention of the step


def greedy_stream_steps(runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: int,
                        constraints: OutputConstraints = UNCONSTRAINED) -> Iterator[StreamStep]:
    """Every step of one source's (batch 1) greedy decoding as it runs, the [EOS] step included (then it
    ends), or max_steps of them. Each step runs only when the consumer asks for the next one, so a
    consumer that stops asking (a cancelled stream) stops the decoding."""
    state = runner.encode(src_ids, src_mask)
    token = np.full(1, runner.bos_id, dtype=np.int64)
    produced: list[int] = []
    for _ in range(max_steps):
        log_probs, cross, state = runner.step(token, state)
        constraints.apply(log_probs, [produced], runner.eos_id)
        next_id = int(log_probs[0].argmax())
        produced.append(next_id)
        yield StreamStep(next_id, float(log_probs[0, next_id]), cross[0])
        if next_id == runner.eos_id:
            return
        token = np.full(1, next_id, dtype=np.int64)


def greedy_stream(runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: int,
                  constraints: OutputConstraints = UNCONSTRAINED) -> Iterator[int]:
    """Token ids of one source (batch 1) as they are produced; ends at [EOS] (not yielded) or max_steps."""
    for step in greedy_stream_steps(runner, src_ids, src_mask, max_steps, constraints):
        if step.token_id == runner.eos_id:
            return
        yield step.token_id
