"""The multi-word-name challenge set: its file is well formed, its scoring counts whole and split names
correctly, and every committed NER manifest records the figures the served pipeline gives today."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib

import numpy as np
import pytest
from exported_models import latest_version_dir

from service.pipelines.crf_decoding import bio_constraints, viterbi
from training.evaluate.ner_challenge import (
    CHALLENGE_FILE,
    ChallengeSentence,
    evaluate_challenge,
    load_challenge,
    score_challenge,
)
from training.export.ner_decoder import same_type_restart_score, transition_chain

NER_MODELS = ("ner-minilm-int8", "ner-bilstm-crf", "ner-bilstm-crf-int8")


def test_the_file_holds_over_100_sentences_of_multi_word_names_tagged_over_the_served_words() -> None:
    sentences = load_challenge()  # refuses tags that miss a served word or do not read as BIO
    assert len(sentences) >= 100
    lengths = [length for s in sentences for _, length in s.entities]
    assert sum(length >= 2 for length in lengths) >= 150
    types = {span[0] for s in sentences for span, _ in s.entities}
    assert {"person", "geo-loc", "sportsteam", "company"} <= types
    first = sentences[0]
    assert first.text == "I live in Los Angeles ." and first.entities == [(("geo-loc", 10, 21), 2)]


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "Los Angeles", "tags": ["B-geo-loc"]}', "1 tags for 2 served words"),
    ('{"text": "Los Angeles", "tags": ["O", "I-geo-loc"]}', "I-geo-loc after O"),
    ('{"text": "Los Angeles", "tags": ["B-person", "I-geo-loc"]}', "I-geo-loc after B-person"),
])
def test_a_line_that_does_not_fit_is_refused_naming_it(tmp_path: pathlib.Path, line: str, message: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"text": "Paris", "tags": ["B-geo-loc"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"set.jsonl:2: {message}"):
        load_challenge(path)


def test_a_name_split_in_two_counts_as_split_and_wrong_while_a_mistyped_whole_name_counts_as_whole() -> None:
    sentences = [ChallengeSentence("I live in Los Angeles .", ("O", "O", "O", "B-geo-loc", "I-geo-loc", "O")),
                 ChallengeSentence("Barack Obama spoke", ("B-person", "I-person", "O"))]
    split = [[("geo-loc", 10, 13), ("geo-loc", 14, 21)], [("person", 0, 12)]]
    result = score_challenge(sentences, split)
    assert result["multi_word_gold_entities"] == 2
    assert result["multi_word_returned_whole"] == 0.5 and result["multi_word_split_in_several"] == 0.5
    assert result["typed"] == {"precision": round(1 / 3, 4), "recall": 0.5, "f1": 0.4}
    mistyped = [[("company", 10, 21)], [("person", 0, 12)]]
    result = score_challenge(sentences, mistyped)
    assert result["multi_word_returned_whole"] == 1.0 and result["multi_word_split_in_several"] == 0.0
    assert result["typed"]["f1"] == 0.5 and result["untyped"]["f1"] == 1.0


@pytest.mark.parametrize("name", NER_MODELS)
def test_each_committed_manifest_records_the_challenge_figures_served_today(name: str) -> None:
    version = latest_version_dir(name)
    recorded = json.loads((version / "manifest.json").read_text())["metrics"]["challenge"]
    assert recorded["file_sha256"] == hashlib.sha256(CHALLENGE_FILE.read_bytes()).hexdigest()
    measured = evaluate_challenge(version)
    assert measured["offset_errors"] == 0 and measured["sentences"] == recorded["sentences"]
    # int8 kernels may round differently on another CPU: a tag or two, not another model.
    for key in ("multi_word_returned_whole", "multi_word_split_in_several"):
        assert abs(measured[key] - recorded[key]) <= 0.02, key
    assert abs(measured["typed"]["f1"] - recorded["typed"]["f1"]) <= 0.02


def test_the_same_type_restart_score_is_estimated_from_the_tags() -> None:
    score, counts = same_type_restart_score([["B-x", "I-x", "B-x", "O"], ["B-y", "B-x", "I-x"]])
    assert counts == {"restart": 1, "continue": 2}  # B-x after B-y is another type: not counted
    assert score == pytest.approx(math.log(2 / 5))


def test_the_transition_chain_reads_a_hesitant_b_b_as_one_name_and_a_confident_one_as_two() -> None:
    labels = ["O", "B-geo-loc", "I-geo-loc"]
    chain, record = transition_chain(labels, [])  # no train: add-one gives log(1/2)
    assert record["same_type_restart_log_probability"] == pytest.approx(-0.6931, abs=1e-4)
    # "Los Angeles" as the committed MiniLM scores it: B 0.98 then B 0.86 / I 0.11.
    hesitant = [[0.01, 0.98, 0.01], [0.03, 0.86, 0.11]]
    log_probabilities = np.log(np.asarray(hesitant))
    assert viterbi(log_probabilities, bio_constraints(labels)) == [1, 1]  # two entities
    strict, _ = transition_chain(labels, [])
    strict.transitions[1:, 1] = -5.0  # set to about train's estimate (-4.96), which needs the WNUT tweets
    assert viterbi(log_probabilities, strict) == [1, 2]  # one entity
    confident = np.log(np.asarray([[1e-4, 0.9998, 1e-4], [1e-4, 0.9998, 1e-4]]))  # two names back to back
    assert viterbi(confident, strict) == [1, 1]
    assert chain.start[2] < -1e3 and chain.transitions[0, 2] < -1e3  # BIO constraints kept


def test_the_docs_quote_the_challenge_figures_the_manifests_record() -> None:
    repo = pathlib.Path(__file__).resolve().parents[1]
    table = (repo / "docs" / "ner.md").read_text("utf-8").split("## Multi-word names: the challenge set", 1)[1]
    readme = " ".join((repo / "README.md").read_text("utf-8").split())
    labels = {"ner-minilm-int8": "MiniLM int8 v2 (BIO Viterbi, default)", "ner-bilstm-crf": "BiLSTM-CRF v1",
              "ner-bilstm-crf-int8": "BiLSTM-CRF int8 v1"}
    whole = {}
    for name, label in labels.items():
        recorded = json.loads((latest_version_dir(name) / "manifest.json").read_text())["metrics"]["challenge"]
        whole[name] = f"{recorded['multi_word_returned_whole']:.1%}"
        row = (f"| {label} | {recorded['typed']['f1']:.3f} | {recorded['untyped']['f1']:.3f} | {whole[name]} | "
               f"{recorded['multi_word_split_in_several']:.1%} |")
        assert row in table, row
    assert f"they return {whole['ner-minilm-int8']} and {whole['ner-bilstm-crf']} of multi-word names whole" in readme
