"""The everyday-sentences sentiment challenge set: its file is well formed, its bootstrap reads a difference
the right way round, and each committed sentiment manifest records what the served pipeline scores today."""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections import Counter

import pytest
from exported_models import latest_version_dir

from training.evaluate.sentiment_challenge import (
    CATEGORIES,
    CHALLENGE_FILE,
    evaluate_challenge,
    load_challenge,
    paired_bootstrap,
)

SENTIMENT_MODELS = ("sentiment-bigru", "sentiment-bigru-int8", "sentiment-minilm-int8")
REPO = pathlib.Path(__file__).resolve().parents[1]
# Below this top-probability margin a label may flip on another CPU's float rounding (int8 kernels differ).
SAFE_MARGIN = 0.05


def test_the_file_holds_over_200_labelled_texts_in_every_category() -> None:
    texts = load_challenge()  # refuses unknown labels and categories, empty texts and repeats
    assert len(texts) >= 200
    per_category = Counter(t.category for t in texts)
    assert set(per_category) == set(CATEGORIES) and min(per_category.values()) >= 10
    assert Counter(t.label for t in texts).keys() == {0, 1, 2}


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "Fine.", "label": "good", "category": "slang"}', "label 'good' is not one of"),
    ('{"text": "Fine.", "label": "neutral", "category": "poetry"}', "category 'poetry' is not one of"),
    ('{"text": "  ", "label": "neutral", "category": "slang"}', "empty text"),
    ('{"text": "it  RAINED.", "label": "neutral", "category": "neutral_fact"}', "repeats line 1"),
])
def test_a_bad_line_is_refused_naming_it(tmp_path: pathlib.Path, line: str, message: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"text": "It rained.", "label": "neutral", "category": "neutral_fact"}\n' + line + "\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match=f"set.jsonl:2: {message}"):
        load_challenge(path)


def test_the_bootstrap_gives_the_better_system_a_positive_difference() -> None:
    gold = [0, 1, 2] * 20
    right, wrong = list(gold), [(g + 1) % 3 for g in gold]
    better = paired_bootstrap(gold, right, wrong, samples=200)
    assert better["difference"] == 1.0 and better["share_a_better"] == 1.0
    assert better["difference_ci95"] == [1.0, 1.0]
    same = paired_bootstrap(gold, right, right, samples=200)
    assert same["difference"] == 0.0 and same["share_a_better"] == 0.0


@pytest.mark.parametrize("name", SENTIMENT_MODELS)
def test_each_committed_manifest_records_the_challenge_figures_served_today(name: str) -> None:
    version = latest_version_dir(name)
    recorded = json.loads((version / "manifest.json").read_text("utf-8"))["metrics"]["challenge"]
    assert recorded["file_sha256"] == hashlib.sha256(CHALLENGE_FILE.read_bytes()).hexdigest()
    measured = evaluate_challenge(version)
    assert measured["vader_baseline"] == recorded["vader_baseline"]  # a lexicon: no float kernels to differ
    confident = [i for i, margin in enumerate(recorded["served_margins"]) if margin >= SAFE_MARGIN]
    assert len(confident) >= 0.9 * len(recorded["served_margins"])
    assert [measured["served_labels"][i] for i in confident] == [recorded["served_labels"][i] for i in confident]
    for category, figures in recorded["served"].items():
        assert measured["served"][category]["macro_f1"] == pytest.approx(figures["macro_f1"], abs=0.02), category


def test_the_docs_quote_the_challenge_figures_the_manifest_records() -> None:
    recorded = json.loads((latest_version_dir("sentiment-bigru") / "manifest.json").read_text("utf-8"))
    challenge = recorded["metrics"]["challenge"]
    ours, vader = challenge["served"]["overall"]["macro_f1"], challenge["vader_baseline"]["overall"]["macro_f1"]
    low, high = challenge["served_minus_vader"]["difference_ci95"]
    quoted = f"macro-F1 {ours:.3f} against VADER's {vader:.3f} (difference 95% interval {low:+.3f} to {high:+.3f})"
    for doc in ("README.md", "docs/sentiment.md"):
        assert quoted in " ".join((REPO / doc).read_text("utf-8").split()), doc
    table = (REPO / "docs" / "sentiment.md").read_text("utf-8").split("## Everyday sentences: the challenge set", 1)[1]
    for category in ("overall", *CATEGORIES):
        ours_row, vader_row = challenge["served"][category], challenge["vader_baseline"][category]
        row = (f"| {category} | {ours_row['n']} | {ours_row['macro_f1']:.3f} | {vader_row['macro_f1']:.3f} | "
               f"{ours_row['accuracy']:.3f} | {vader_row['accuracy']:.3f} |")
        assert row in table, row
