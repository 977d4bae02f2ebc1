"""CRF decoding: the service's numpy Viterbi and marginals against the torch CRF and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipelines.crf_decoding import CRFParameters, bio_constraints, marginals, viterbi
from training.models.crf import CRF


def random_crf(num_tags: int, seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags)
    with torch.no_grad():
        for parameter in (crf.start, crf.end, crf.transitions):
            parameter.normal_(0, 2)
    return crf


def numpy_parameters(crf: CRF) -> CRFParameters:
    return CRFParameters(*(p.detach().numpy() for p in (crf.start, crf.end, crf.transitions)))


def all_paths(emissions: np.ndarray, crf: CRFParameters) -> tuple[list[tuple[int, ...]], np.ndarray]:
    length, num_tags = emissions.shape
    paths = list(itertools.product(range(num_tags), repeat=length))
    scores = np.array([
        crf.start[p[0]] + crf.end[p[-1]] + sum(emissions[t, p[t]] for t in range(length))
        + sum(crf.transitions[p[t - 1], p[t]] for t in range(1, length))
        for p in paths
    ])
    return paths, scores


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), num_tags=st.integers(2, 6), lengths=st.lists(st.integers(1, 9), min_size=1,
                                                                                 max_size=5))
def test_numpy_viterbi_equals_torch_viterbi_on_padded_batches(seed: int, num_tags: int, lengths: list[int]) -> None:
    crf = random_crf(num_tags, seed)
    emissions = torch.randn(len(lengths), max(lengths), num_tags, generator=torch.Generator().manual_seed(seed)) * 3
    mask = torch.tensor([[1] * n + [0] * (max(lengths) - n) for n in lengths])
    expected = crf.viterbi(emissions, mask)
    parameters = numpy_parameters(crf)
    got = [viterbi(emissions[i, :n].numpy(), parameters) for i, n in enumerate(lengths)]
    assert got == expected


@pytest.mark.parametrize("length", [1, 2, 4])
def test_viterbi_is_the_best_path_and_marginals_match_brute_force(length: int) -> None:
    crf = random_crf(3, seed=length)
    parameters = numpy_parameters(crf)
    emissions = np.random.default_rng(length).normal(0, 2, (length, 3))
    paths, scores = all_paths(emissions, parameters)
    assert tuple(viterbi(emissions, parameters)) == paths[int(scores.argmax())]
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    expected = np.zeros((length, 3))
    for path, p in zip(paths, probabilities, strict=True):
        expected[range(length), path] += p
    np.testing.assert_allclose(marginals(emissions, parameters), expected, atol=1e-9)


def test_torch_negative_log_likelihood_matches_brute_force_and_ignores_padding() -> None:
    crf = random_crf(3, seed=7)
    emissions = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(7))
    tags = torch.tensor([[2, 0, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    paths, scores = all_paths(emissions[0, :3].numpy().astype(np.float64), numpy_parameters(crf))
    log_z = np.log(np.exp(scores - scores.max()).sum()) + scores.max()
    expected = log_z - scores[paths.index((2, 0, 1))]
    assert crf.neg_log_likelihood(emissions, tags, mask).item() == pytest.approx(expected, abs=1e-4)
    padded_differently = emissions.clone()
    padded_differently[0, 3:] = 99.0
    assert crf.neg_log_likelihood(padded_differently, tags, mask).item() == pytest.approx(expected, abs=1e-4)


LABELS = ["O", "B-person", "I-person", "B-geo-loc", "I-geo-loc"]


def valid_bio(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_bio_viterbi_is_the_most_probable_valid_bio_sequence(length: int, seed: int) -> None:
    logits = np.random.default_rng(seed).normal(0, 3, (length, len(LABELS)))
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    chain = bio_constraints(LABELS)
    path = viterbi(log_probabilities, chain)
    assert valid_bio([LABELS[k] for k in path])
    valid = [p for p in itertools.product(range(len(LABELS)), repeat=length) if valid_bio([LABELS[k] for k in p])]
    best = max(valid, key=lambda p: sum(log_probabilities[t, k] for t, k in enumerate(p)))
    assert tuple(path) == best
    probabilities = marginals(log_probabilities, chain)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities[0, [LABELS.index("I-person"), LABELS.index("I-geo-loc")]].max() < 1e-12  # no I- first


def test_bio_viterbi_turns_a_stray_inside_tag_into_a_whole_entity() -> None:
    # argmax would say O, I-person: conlleval reads that as an entity starting with I-.
    log_probabilities = np.log(np.array([[0.6, 0.3, 0.05, 0.03, 0.02], [0.1, 0.2, 0.6, 0.05, 0.05]]))
    assert [LABELS[k] for k in log_probabilities.argmax(axis=1)] == ["O", "I-person"]
    assert [LABELS[k] for k in viterbi(log_probabilities, bio_constraints(LABELS))] == ["B-person", "I-person"]
