"""Batched beam search over the step graphs, with the GNMT length penalty and n-best output.

Rows are sentence-major (sentence s owns rows s*K .. s*K+K-1). Each step, every live sentence takes
its 2K best (beam, token) continuations: an [EOS] among the top K ranks finishes a hypothesis, the
best K others stay live. A sentence is done when it holds K finished hypotheses and no live beam can
still beat the worst of them: log-probs only fall, so a live beam's best possible final score is its
current sum divided by the penalty at the sentence's maximum length (exact for alpha >= 0). Done
sentences leave the batch (one np.take over every tensor), so long sentences do not drag short ones.
A sentence whose call is cancelled or past its deadline (`stops`, checked before every step) leaves
the same way, with whatever it had finished (its caller discards it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.pipelines.hypothesis import Hypothesis, length_penalty
from service.pipelines.output_constraints import UNCONSTRAINED, OutputConstraints
from service.pipelines.seq2seq_runtime import DecoderState, StepRunner

NEG_INF = -1e9  # finite: keeps the arithmetic free of inf - inf


class _Finished:
    """The best K finished hypotheses of one sentence."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[Hypothesis] = []

    def add(self, hypothesis: Hypothesis) -> None:
        self.items.append(hypothesis)
        self.items.sort(key=lambda h: -h.score)
        del self.items[self.size:]

    def full(self) -> bool:
        return len(self.items) >= self.size

    def worst(self) -> float:
        return self.items[-1].score


def beam_search(
    runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: np.ndarray, beam_size: int,
    n_best: int = 1, alpha: float = 0.6, with_attention: bool = False,
    stops: Sequence[Callable[[], bool]] | None = None, constraints: OutputConstraints = UNCONSTRAINED,
) -> list[list[Hypothesis]]:
    """For each source row, its n_best hypotheses, best first (score = log_prob / length_penalty)."""
    search = BeamSearch(runner, src_ids, src_mask, max_steps, beam_size, n_best, alpha, with_attention, stops,
                        constraints)
    while not search.finished:
        search.advance()
    return search.results()


class BeamSearch:
    """Beam search as a step machine: each `advance()` runs the encoder (the first) or one decoder step,
    so a scheduler can interleave several searches step by step (service/batching/step_scheduler.py);
    `beam_search` runs one to the end. The same code either way: outputs cannot differ."""

    def __init__(
        self, runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray, max_steps: np.ndarray,
        beam_size: int, n_best: int = 1, alpha: float = 0.6, with_attention: bool = False,
        stops: Sequence[Callable[[], bool]] | None = None, constraints: OutputConstraints = UNCONSTRAINED,
    ) -> None:
        batch, k = src_ids.shape[0], beam_size
        self.constraints = constraints
        self.runner, self.src_ids, self.src_mask, self.max_steps = runner, src_ids, src_mask, max_steps
        self.k, self.n_best, self.alpha, self.stops = k, min(n_best, k), alpha, stops
        self.state: DecoderState | None = None  # encoded (and repeated k times) on the first advance
        self.active = np.arange(batch)                     # sentence of each group of k rows
        # float32 like the log-probs: the top-2k selection below is the costliest numpy step, and float64
        # would double the memory it streams through (k x vocab per sentence).
        self.scores = np.tile(np.array([0.0] + [NEG_INF] * (k - 1), dtype=np.float32), batch)  # step 0: one beam
        self.tokens = np.full(batch * k, runner.bos_id, dtype=np.int64)
        self.history = np.zeros((batch * k, 0), dtype=np.int64)
        self.history_log_probs = np.zeros((batch * k, 0), dtype=np.float32)  # each token's own log-prob
        self.attention = np.zeros((batch * k, 0, src_ids.shape[1]), dtype=np.float32) if with_attention else None
        self.finished_by_sentence = [_Finished(k) for _ in range(batch)]
        self.step = 0
        self.done = False

    @property
    def finished(self) -> bool:
        return self.done or not len(self.active)

    def advance(self) -> None:
        """The encoder on the first call, then one decoder step over the live beams."""
        k, alpha, runner = self.k, self.alpha, self.runner
        if self.state is None:
            self.state = runner.encode(self.src_ids, self.src_mask).take(np.repeat(np.arange(len(self.active)), k))
            return
        state, tokens, scores, history = self.state, self.tokens, self.scores, self.history
        history_log_probs, attention, active = self.history_log_probs, self.attention, self.active
        finished = self.finished_by_sentence
        if self.stops is not None:
            live_groups = [group for group, sentence in enumerate(active) if not self.stops[int(sentence)]()]
            if len(live_groups) < len(active):
                if not live_groups:
                    self.done = True
                    return
                index = (np.asarray(live_groups, dtype=np.int64)[:, None] * k + np.arange(k)).ravel()
                state, tokens, scores, history = state.take(index), tokens[index], scores[index], history[index]
                history_log_probs = history_log_probs[index]
                attention = None if attention is None else attention[index]
                active = active[np.asarray(live_groups, dtype=np.int64)]
        log_probs, cross, state = runner.step(tokens, state)
        self.constraints.apply(log_probs, history, runner.eos_id)
        vocab = log_probs.shape[1]
        self.step += 1
        step = self.step
        candidates = (scores[:, None] + log_probs).reshape(len(active), k * vocab)
        rows, next_tokens, next_scores, kept_groups = [], [], [], []
        for group, sentence in enumerate(active):
            order = top_candidates(candidates[group], scores[group * k : (group + 1) * k], vocab, 2 * k)
            live: list[tuple[int, int, float]] = []
            for rank, flat in enumerate(order):
                row, token, total = group * k + int(flat) // vocab, int(flat) % vocab, float(candidates[group, flat])
                if token == runner.eos_id:
                    if rank < k:  # HF's rule: an [EOS] below the top k ranks would crowd out live beams
                        finished[sentence].add(_hypothesis(history[row], total, step, True, alpha,
                                                           _attention_of(attention, row, None),
                                                           np.append(history_log_probs[row], log_probs[row, token])))
                    continue
                live.append((row, token, total))
                if len(live) == k:
                    break
            if step >= self.max_steps[sentence]:  # out of budget: the live beams end here, without [EOS]
                for row, token, total in live:
                    finished[sentence].add(_hypothesis(np.append(history[row], token), total, step, False, alpha,
                                                       _attention_of(attention, row, cross[row]),
                                                       np.append(history_log_probs[row], log_probs[row, token])))
                continue
            done = finished[sentence].full() and (
                live[0][2] / length_penalty(int(self.max_steps[sentence]), alpha) <= finished[sentence].worst())
            if done:
                continue
            kept_groups.append(group)
            for row, token, total in live:
                rows.append(row)
                next_tokens.append(token)
                next_scores.append(total)
        if not rows:
            self.done = True
            return
        index = np.asarray(rows, dtype=np.int64)
        new_tokens = np.asarray(next_tokens, dtype=np.int64)
        self.history = np.concatenate([history[index], new_tokens[:, None]], axis=1)
        self.history_log_probs = np.concatenate([history_log_probs[index], log_probs[index, new_tokens][:, None]],
                                                axis=1)
        if attention is not None:
            attention = np.concatenate([attention[index], cross[index][:, None, :]], axis=1)
        self.attention = attention
        # Sentences left: take every tensor (memory too); otherwise beams only move within sentences.
        self.state = state.take(index) if len(kept_groups) < len(active) else state.reorder(index)
        self.active = active[np.asarray(kept_groups, dtype=np.int64)]
        self.tokens, self.scores = new_tokens, np.asarray(next_scores, dtype=np.float32)

    def results(self) -> list[list[Hypothesis]]:
        return [f.items[: self.n_best] for f in self.finished_by_sentence]


def top_candidates(candidates: np.ndarray, beam_scores: np.ndarray, vocab: int, count: int) -> np.ndarray:
    """Flat indices of the `count` best of one sentence's k x vocab candidates, best first.

    A full selection over k x vocab values was the costliest numpy step. The count-th best value of
    the best beam's own row is a lower bound for the count-th best overall (a subset's count-th best
    cannot beat the whole set's), so one selection over a single row plus a comparison finds a small
    superset of the answer.
    """
    if count > vocab:  # a toy vocabulary: sort everything
        survivors = np.arange(len(candidates))
    else:
        best_beam = int(beam_scores.argmax())
        row = candidates[best_beam * vocab : (best_beam + 1) * vocab]
        bound = np.partition(row, vocab - count)[vocab - count]
        survivors = np.flatnonzero(candidates >= bound)
    # Stable sort on the negated values: ties keep index order, so results do not depend on luck.
    return survivors[np.argsort(-candidates[survivors], kind="stable")][:count]


def _attention_of(attention: np.ndarray | None, row: int, last: np.ndarray | None) -> np.ndarray | None:
    if attention is None:
        return None
    return attention[row] if last is None else np.concatenate([attention[row], last[None]], axis=0)


def _hypothesis(tokens: np.ndarray, log_prob: float, steps: int, ended: bool, alpha: float,
                attention: np.ndarray | None, token_log_probs: np.ndarray) -> Hypothesis:
    return Hypothesis(token_ids=[int(t) for t in tokens], log_prob=log_prob, length=steps,
                      score=log_prob / length_penalty(steps, alpha), attention=attention,
                      token_log_probs=[float(v) for v in token_log_probs])
