"""Changing a tagger's decoder publishes a new version: same graph, new decoder, both dev scores and the
new version's served test metrics recorded, and the server's pipeline loads it."""

from __future__ import annotations

import json
import pathlib

import pytest
from exported_models import latest_version_dir

from service.pipelines.ner import ARGMAX, BIO_VITERBI, NerPipeline
from service.runtime.version_loader import load_version
from training.export.ner_decoder import republish

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
