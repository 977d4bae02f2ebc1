"""Changing a tagger's decoder publishes a new version: same graph, new decoder, both dev scores and the
new version's served test metrics recorded, and the server's pipeline loads it."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
from exported_models import latest_version_dir

from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.ner import ARGMAX, BIO_VITERBI, TRANSITION_VITERBI, NerPipeline
from service.runtime.version_loader import load_version
from training.export.ner_decoder import CHAIN_FILE, republish

pytestmark = pytest.mark.slow  # republishes (re-exports and re-scores) a MiniLM NER version

SOURCE = latest_version_dir("ner-minilm-int8")


def test_a_new_decoder_is_a_new_version_of_the_same_graph(tmp_path: pathlib.Path) -> None:
    source = json.loads((SOURCE / "manifest.json").read_text())
    other = ARGMAX if source["ner"]["decoder"] == BIO_VITERBI else BIO_VITERBI
    out = tmp_path / "ner-minilm-int8" / "99"
    report = republish(SOURCE, out, other)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "99" and manifest["ner"]["decoder"] == other
    assert (out / "model.onnx").read_bytes() == (SOURCE / "model.onnx").read_bytes()
    assert manifest["derived_from"] == {**manifest["derived_from"], "version": source["version"],
                                        "model_sha256": source["files"]["model.onnx"]}
    assert set(manifest["decoder_selection"]["entity_f1"]) == {ARGMAX, BIO_VITERBI}
    assert manifest["metrics"]["split"] == "test" and manifest["metrics"]["served"]["offset_errors"] == 0
    assert report["test_micro"] == manifest["metrics"]["served"]["micro"]
    assert NerPipeline(load_version(out))(["Obama met Merkel in Berlin"])[0].entities


def test_only_the_minilm_tagger_has_a_decoder_choice(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SystemExit, match="only the MiniLM"):
        republish(latest_version_dir("ner-bilstm-crf"), tmp_path / "x" / "2", BIO_VITERBI)


def test_the_transition_decoder_reads_its_chain_from_the_version_and_keeps_los_angeles_whole(
        tmp_path: pathlib.Path) -> None:
    """The committed graph says Los/B-geo-loc Angeles/B-geo-loc here (B 0.86, I 0.11): BIO Viterbi answers
    two places, the transition decoder one (docs/ner.md)."""
    text = "I live in Los Angeles ."
    assert [e.text for e in NerPipeline(load_version(SOURCE))([text])[0].entities] == ["Los", "Angeles"]
    out = tmp_path / "ner-minilm-int8" / "99"
    report = republish(SOURCE, out, TRANSITION_VITERBI)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ner"]["decoder"] == TRANSITION_VITERBI and manifest["ner"]["crf"] == CHAIN_FILE
    assert CHAIN_FILE in manifest["files"]
    transitions = manifest["decoder_selection"]["transitions"]
    assert transitions["train_word_counts"] == {"restart": 5, "continue": 849}
    assert manifest["metrics"]["challenge"] == report["challenge"]
    assert report["challenge"]["multi_word_returned_whole"] > 0.9
    [prediction] = NerPipeline(load_version(out))([text])
    assert [(e.type, e.text, e.start, e.end) for e in prediction.entities] == [("geo-loc", "Los Angeles", 10, 21)]


def test_a_transition_decoder_without_a_fitting_chain_is_refused_at_load(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "ner-minilm-int8" / SOURCE.name  # a manifest names its own folder
    shutil.copytree(SOURCE, out)
    manifest = read_manifest(out)
    republish_manifest(out, {"ner": {**manifest.data["ner"], "decoder": TRANSITION_VITERBI}})
    with pytest.raises(ValueError, match=r"needs ner\.crf"):
        NerPipeline(load_version(out))
    (out / CHAIN_FILE).write_text(json.dumps({"start": [0.0], "end": [0.0], "transitions": [[0.0]]}))
    republish_manifest(out, {"ner": {**manifest.data["ner"], "decoder": TRANSITION_VITERBI, "crf": CHAIN_FILE}})
    with pytest.raises(ValueError, match="does not hold 21 tags' transitions"):
        NerPipeline(load_version(out))
