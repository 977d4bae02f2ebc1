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
from service.pipelines.seq2seq_runtime import StepRunner


def greedy_search(
    runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: np.ndarray,
    alpha: float = 0.0, with_attention: bool = False, stops: Sequence[Callable[[], bool]] | None = None,
) -> list[Hypothesis]:
    """One hypothesis per row; row i stops at [EOS] or after max_steps[i] tokens. Encoder runs once.
    A row stopped by `stops` keeps the tokens it had (its caller discards them)."""
    batch = src_ids.shape[0]
    state = runner.encode(src_ids, src_mask)
    active = np.arange(batch)  # original row of each row still decoding
    tokens = np.full(batch, runner.bos_id, dtype=np.int64)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    log_probs_sum = np.zeros(batch)
    token_log_probs: list[list[float]] = [[] for _ in range(batch)]
    attention: list[list[np.ndarray]] = [[] for _ in range(batch)]
    ended = np.zeros(batch, dtype=bool)
    step = 0
    while len(active):
        if stops is not None:
            live = [position for position, row in enumerate(active) if not stops[int(row)]()]
            if len(live) < len(active):
                if not live:
                    break
                keep_rows = np.asarray(live, dtype=np.int64)
                state, active, tokens = state.take(keep_rows), active[keep_rows], tokens[keep_rows]
        log_probs, cross, state = runner.step(tokens, state)
        chosen = log_probs.argmax(axis=-1)
        chosen_log_probs = log_probs[np.arange(len(active)), chosen]
        log_probs_sum[active] += chosen_log_probs
        step += 1
        keep = []
        for position, row in enumerate(active):
            token = int(chosen[position])
            token_log_probs[row].append(float(chosen_log_probs[position]))
            if token == runner.eos_id:
                ended[row] = True
                continue
            outputs[row].append(token)
            if with_attention:
                attention[row].append(cross[position])
            if step < max_steps[row]:
                keep.append(position)
        if len(keep) < len(active):  # finished rows leave the batch: later steps are cheaper
            keep_rows = np.asarray(keep, dtype=np.int64)
            state, active, chosen = state.take(keep_rows), active[keep_rows], chosen[keep_rows]
        tokens = chosen.astype(np.int64)
    results = []
    for index in range(batch):
        length = len(outputs[index]) + int(ended[index])
        results.append(Hypothesis(
            token_ids=outputs[index], log_prob=float(log_probs_sum[index]), length=length,
            score=float(log_probs_sum[index]) / length_penalty(length, alpha),
            attention=np.stack(attention[index]) if with_attention and attention[index]
            else (np.zeros((0, src_ids.shape[1]), np.float32) if with_attention else None),
            token_log_probs=token_log_probs[index],
        ))
    return results


@dataclass(frozen=True)
class StreamStep:
    token_id: int           # runner.eos_id on the step that ends the output
    log_prob: float         # of that token
    attention: np.ndarray   # [src_len] cross-attention of the step


def greedy_stream_steps(runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: int
                        ) -> Iterator[StreamStep]:
    """Every step of one source's (batch 1) greedy decoding as it runs, the [EOS] step included (then it
    ends), or max_steps of them. Each step runs only when the consumer asks for the next one, so a
    consumer that stops asking (a cancelled stream) stops the decoding."""
    state = runner.encode(src_ids, src_mask)
    token = np.full(1, runner.bos_id, dtype=np.int64)
    for _ in range(max_steps):
        log_probs, cross, state = runner.step(token, state)
        next_id = int(log_probs[0].argmax())
        yield StreamStep(next_id, float(log_probs[0, next_id]), cross[0])
        if next_id == runner.eos_id:
            return
        token = np.full(1, next_id, dtype=np.int64)


def greedy_stream(runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: int) -> Iterator[int]:
    """Token ids of one source (batch 1) as they are produced; ends at [EOS] (not yielded) or max_steps."""
    for step in greedy_stream_steps(runner, src_ids, src_mask, max_steps):
        if step.token_id == runner.eos_id:
            return
        yield step.token_id
