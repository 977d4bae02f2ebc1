"""Greedy and beam search over the exported step graphs of a tiny random Transformer."""

from __future__ import annotations

import numpy as np
import pytest

from service.pipelines.beam_search import beam_search, top_candidates
from service.pipelines.greedy import greedy_search
from service.pipelines.hypothesis import length_penalty
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version

TEXTS = ["Jesus wept.", "In the beginning, God created the heavens.", "Dieu dit: Que la lumière soit!"]


@pytest.fixture(scope="module")
def pipeline(tiny_translation_models) -> TranslationPipeline:
    return TranslationPipeline(load_version(tiny_translation_models / "transformer" / "1"))


def encoded(pipeline: TranslationPipeline, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return pipeline._pad([pipeline.source_ids(t) for t in texts])


def sequence_log_prob(pipeline: TranslationPipeline, text: str, tokens: list[int], with_eos: bool) -> float:
    """Teacher-force `tokens` (+[EOS]) through the step graph and sum their log-probs."""
    runner = pipeline.runner
    src, mask = encoded(pipeline, [text])
    state, previous, total = runner.encode(src, mask), runner.bos_id, 0.0
    for token in [*tokens, runner.eos_id] if with_eos else tokens:
        log_probs, _, state = runner.step(np.array([previous]), state)
        total, previous = total + float(log_probs[0, token]), token
    return total


def test_beam_1_equals_greedy(pipeline) -> None:
    src, mask = encoded(pipeline, TEXTS)
    steps = np.array([12, 7, 15])
    greedy = greedy_search(pipeline.runner, src, mask, steps)
    beam = beam_search(pipeline.runner, src, mask, steps, beam_size=1, alpha=0.0)
    assert [b[0].token_ids for b in beam] == [g.token_ids for g in greedy]
    assert [round(b[0].log_prob, 4) for b in beam] == [round(g.log_prob, 4) for g in greedy]


def test_n_best_is_sorted_distinct_and_scores_are_penalised_log_probs(pipeline) -> None:
    src, mask = encoded(pipeline, TEXTS)
    alpha = 0.6
    results = beam_search(pipeline.runner, src, mask, np.array([10, 10, 10]), beam_size=5, n_best=4, alpha=alpha)
    for text, hypotheses in zip(TEXTS, results, strict=True):
        assert len(hypotheses) == 4
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.token_ids) for h in hypotheses}) == 4
        for h in hypotheses:
            ended = h.length == len(h.token_ids) + 1
            recomputed = sequence_log_prob(pipeline, text, h.token_ids, ended)
            assert h.log_prob == pytest.approx(recomputed, abs=1e-3)
            assert h.score == pytest.approx(recomputed / length_penalty(h.length, alpha), abs=1e-3)


def test_beam_search_finds_at_least_the_greedy_score(pipeline) -> None:
    src, mask = encoded(pipeline, TEXTS)
    steps = np.array([10, 10, 10])
    greedy = greedy_search(pipeline.runner, src, mask, steps, alpha=0.6)
    beam = beam_search(pipeline.runner, src, mask, steps, beam_size=4, alpha=0.6)
    for g, b in zip(greedy, beam, strict=True):
        assert b[0].score >= g.score - 1e-6


@pytest.mark.parametrize("beam_size", [1, 3])
def test_max_output_tokens_is_respected_and_alignment_has_one_row_per_token(pipeline, beam_size) -> None:
    options = DecodeOptions(beam_size=beam_size, max_output_tokens=4, alignment=True)
    results = pipeline([TranslationRequest(t, options) for t in TEXTS])
    for text, result in zip(TEXTS, results, strict=True):
        best = result.hypotheses[0]
        assert len(best.tokens) <= 4
        assert result.alignment is not None
        assert result.alignment.weights.shape == (len(best.tokens), result.source_token_count)
        assert result.alignment.source_tokens[-1] == "[EOS]"
        assert np.allclose(result.alignment.weights.sum(axis=1), 1.0, atol=1e-3)
        assert result.source_token_count == len(pipeline.source_ids(text))


def test_mixed_options_in_one_batch_each_get_their_own(pipeline) -> None:
    requests = [TranslationRequest(TEXTS[0], DecodeOptions(beam_size=3, n_best=3)),
                TranslationRequest(TEXTS[1], DecodeOptions(max_output_tokens=2)), TEXTS[2]]
    results = pipeline(requests)
    assert [len(r.hypotheses) for r in results] == [3, 1, 1]
    assert len(results[1].hypotheses[0].tokens) <= 2
    assert results[0].alignment is None


def test_stream_yields_the_greedy_tokens_and_text(pipeline) -> None:
    options = DecodeOptions(beam_size=1, max_output_tokens=9)
    greedy = pipeline([TranslationRequest(TEXTS[1], options)])[0].hypotheses[0]
    pieces = list(pipeline.stream(TEXTS[1], max_output_tokens=9))
    assert [p.token for p in pieces] == greedy.tokens
    assert "".join(p.text for p in pieces) == greedy.text


@pytest.mark.parametrize("seed", range(5))
def test_top_candidates_equals_a_full_sort(seed) -> None:
    rng = np.random.default_rng(seed)
    k, vocab = 4, 50
    beam_scores = rng.normal(size=k).astype(np.float32) * 3
    candidates = (beam_scores[:, None] + np.log(rng.dirichlet(np.ones(vocab), size=k))).astype(np.float32).ravel()
    expected = np.argsort(-candidates, kind="stable")[: 2 * k]
    assert top_candidates(candidates, beam_scores, vocab, 2 * k).tolist() == expected.tolist()
