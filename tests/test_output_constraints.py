"""Output rules of the translation decoder (issue #19 item 3): a non-empty source never gets an empty
translation, and an n-gram never runs three times in a row; everything else is the model's own choice.

A scripted step runner plays a model that wants to end at once and then loop ("la la la ..."), so each
rule is seen doing its one job in greedy, beam and streaming decoding; the committed transformer shows
the same on the input the issue reported ("." came back empty under beam 4)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from service.batching.runs import run_pipeline
from service.pipelines.beam_search import beam_search
from service.pipelines.greedy import greedy_search, greedy_stream
from service.pipelines.output_constraints import FORBIDDEN, UNCONSTRAINED, OutputConstraints, longest_loop, loop_starts
from service.pipelines.seq2seq_runtime import DecoderState
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version

BOS, EOS, PAD, LA, DO, RE, MI = 0, 1, 2, 3, 4, 5, 6
VOCAB = 7
REPO = pathlib.Path(__file__).resolve().parents[1]


class LoopingModel:
    """Prefers [EOS] first, then 'la' for ever; 'do' is always its second choice, 're' third, 'mi' fourth,
    [EOS] last after the first step. The state counts the steps taken."""

    bos_id, eos_id, pad_id = BOS, EOS, PAD

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> DecoderState:
        return DecoderState(src_mask, {}, {"steps": np.zeros((len(src_ids), 1), np.float32)})

    def step(self, tokens: np.ndarray, state: DecoderState) -> tuple[np.ndarray, np.ndarray, DecoderState]:
        rows = len(tokens)
        first = state.state["steps"][:, 0] == 0
        logits = np.tile(np.array([-20.0, -9.0, -20.0, 4.0, 3.0, 2.0, 1.0], np.float32), (rows, 1))
        logits[first, EOS] = 6.0
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        cross = np.ones((rows, state.src_mask.shape[1]), np.float32) / state.src_mask.shape[1]
        return log_probs.astype(np.float32), cross, DecoderState(
            state.src_mask, state.memory, {"steps": state.state["steps"] + 1})


def decode_greedy(constraints: OutputConstraints, steps: int = 8) -> list[int]:
    src, mask = np.array([[LA, EOS]]), np.ones((1, 2), np.int64)
    return greedy_search(LoopingModel(), src, mask, np.array([steps]), constraints=constraints)[0].token_ids  # type: ignore[arg-type]


def test_without_rules_the_model_ends_at_once() -> None:
    assert decode_greedy(UNCONSTRAINED) == []


def test_min_tokens_forbids_eos_until_there_is_output_then_the_model_loops() -> None:
    assert decode_greedy(OutputConstraints(min_tokens=1)) == [LA] * 8


def test_the_loop_guard_allows_two_copies_and_forbids_starting_a_third() -> None:
    tokens = decode_greedy(OutputConstraints(min_tokens=1, max_loop_ngram=4), steps=12)
    assert tokens[:3] == [LA, LA, DO]  # 'la la' allowed, a third 'la' not: the next best instead
    assert longest_loop(tokens) <= 2
    assert len(tokens) == 12  # nothing ended the output early: only loops were cut


def test_beam_search_obeys_the_same_rules_for_every_hypothesis() -> None:
    src, mask = np.array([[LA, EOS]]), np.ones((1, 2), np.int64)
    rules = OutputConstraints(min_tokens=1, max_loop_ngram=3)
    hypotheses = beam_search(LoopingModel(), src, mask, np.array([10]), beam_size=3, n_best=3,  # type: ignore[arg-type]
                             constraints=rules)[0]
    unconstrained = beam_search(LoopingModel(), src, mask, np.array([10]), beam_size=3, n_best=3)[0]  # type: ignore[arg-type]
    assert unconstrained[0].token_ids == []
    assert all(h.token_ids for h in hypotheses)
    assert all(longest_loop(h.token_ids, 3) <= 2 for h in hypotheses)


def test_streaming_obeys_the_rules() -> None:
    src, mask = np.array([[LA, EOS]]), np.ones((1, 2), np.int64)
    streamed = list(greedy_stream(LoopingModel(), src, mask, 12, OutputConstraints(1, 4)))  # type: ignore[arg-type]
    assert streamed == decode_greedy(OutputConstraints(1, 4), steps=12)


def test_a_chosen_token_reports_the_models_own_log_prob() -> None:
    src, mask = np.array([[LA, EOS]]), np.ones((1, 2), np.int64)
    hypothesis = greedy_search(LoopingModel(), src, mask, np.array([3]),  # type: ignore[arg-type]
                               constraints=OutputConstraints(1, 4))[0]
    assert all(lp > FORBIDDEN / 2 for lp in hypothesis.token_log_probs)
    first_step = np.array([-20.0, 6.0, -20.0, 4.0, 3.0, 2.0, 1.0])  # [EOS] is the model's first choice
    own = first_step[LA] - np.log(np.exp(first_step).sum())
    assert hypothesis.token_log_probs[0] == pytest.approx(own, abs=1e-5)


@pytest.mark.parametrize(("history", "starts"), [
    ([], set()), ([7], set()), ([7, 7], {7}), ([5, 7, 5, 7], {5}), ([1, 2, 3, 1, 2, 3], {1}),
    ([1, 2, 3, 4, 1, 2, 3, 4], {1}), ([9, 9, 8, 9, 9, 8], {9}), ([1, 2, 1, 3], set()),
])
def test_loop_starts_are_the_first_tokens_of_ngrams_just_seen_twice_in_a_row(history: list[int], starts: set[int]
                                                                            ) -> None:
    assert loop_starts(history, 4) == starts


def test_longest_loop_counts_consecutive_copies_only() -> None:
    assert longest_loop(["a", "b", "a", "b", "a", "b", "c"]) == 3
    assert longest_loop(["a", "b", "c", "a", "b", "c"]) == 2
    assert longest_loop(["a", "b", "x", "a", "b"]) == 1
    assert longest_loop([]) == 0


def test_the_committed_transformer_no_longer_answers_a_full_stop_with_nothing() -> None:
    version = REPO / "exported" / "transformer" / "1"
    pipeline = TranslationPipeline(load_version(version, intra_op_threads=1))
    assert pipeline.constraints.min_tokens >= 1
    for beam in (1, 4):
        (result,) = run_pipeline(pipeline, [TranslationRequest(".", DecodeOptions(beam_size=beam))])
        assert result.hypotheses[0].text.strip(), beam
