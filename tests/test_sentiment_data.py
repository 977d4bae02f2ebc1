"""The sentiment data: label mapping, a deterministic split stratified by domain, recorded hashes."""

from __future__ import annotations

import json
import pathlib

import pytest
from exported_models import SENTIMENT

from training.data.sentiment import DOMAINS, load_splits, score_to_label, split

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_label_mapping_has_a_neutral_band_of_half_a_point() -> None:
    assert [score_to_label(s) for s in (-4, -0.5, -0.49, 0.0, 0.49, 0.5, 4)] == [0, 0, 1, 1, 1, 2, 2]


@pytest.fixture(scope="module")
def splits():
    return load_splits()


def test_split_sizes_and_domains(splits) -> None:
    parts, _ = splits
    assert sum(len(p) for p in parts.values()) == 23703
    for domain in DOMAINS:
        n_domain = sum(1 for p in parts.values() for s in p if s.domain == domain)
        n_test = sum(1 for s in parts["test"] if s.domain == domain)
        assert abs(n_test / n_domain - 0.1) < 0.01, domain  # stratified: every domain split 80/10/10
    ids = {name: {(s.domain, s.id) for s in rows} for name, rows in parts.items()}
    assert not ids["train"] & ids["test"] and not ids["dev"] & ids["test"] and not ids["train"] & ids["dev"]


def test_split_ignores_file_order(splits) -> None:
    parts, _ = splits
    everything = [s for p in parts.values() for s in p]
    again = split(list(reversed(everything)))
    assert [(s.domain, s.id) for s in again["test"]] == [(s.domain, s.id) for s in parts["test"]]


def test_committed_model_records_this_split(splits) -> None:
    _, info = splits
    manifest = json.loads((SENTIMENT / "manifest.json").read_text())
    for key in ("data_sha256", "train_sha256", "dev_sha256", "test_sha256"):
        assert manifest["data"][key] == info[key], key
