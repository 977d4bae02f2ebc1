"""The int8 variant: quantize_dynamic after quant_pre_process really quantizes the matrix products,
answers like its fp32 source, and its published manifest records the measured quality delta."""

from __future__ import annotations

import pathlib

import pytest
from exported_models import EXPORTED, SENTIMENT, latest_version_dir

from service.batching.runs import run_pipeline
from service.model.manifest import read_manifest
from service.pipelines.sentiment import SentimentPipeline
from service.runtime.version_loader import load_version
from training.export.quantize import prepare, quantize

TEXTS = ["What a wonderful, joyful day!", "The food was cold and the staff rude.", "The meeting is on Tuesday."]


@pytest.mark.slow
def test_quantized_graph_uses_integer_matmuls_and_keeps_the_gru_fp32(tmp_path: pathlib.Path) -> None:
    report = quantize(SENTIMENT, tmp_path / "1")
    assert report["ops_int8"].get("MatMulInteger", 0) >= 3 and report["ops_int8"].get("MatMul", 0) < 3
    assert report["ops_int8"]["GRU"] == report["ops_fp32"]["GRU"]  # onnxruntime has no int8 GRU kernel
    assert report["bytes"]["int8"] < report["bytes"]["fp32"] / 2


def test_a_source_given_relative_to_the_working_directory_is_found(tmp_path: pathlib.Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented command passes `exported/<model>/<version>`; quant_pre_process runs inside a scratch
    folder, where that relative path used to point nowhere (FileNotFoundError)."""
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "model.onnx").write_bytes((SENTIMENT / "model.onnx").read_bytes())
    (tmp_path / "scratch").mkdir()
    monkeypatch.chdir(tmp_path)
    prepare(pathlib.Path("exported/model.onnx"), pathlib.Path("scratch/prepared.onnx"))
    assert (tmp_path / "scratch" / "prepared.onnx").stat().st_size > 0


def test_published_int8_variant_answers_like_its_source() -> None:
    variant = latest_version_dir("sentiment-bigru-int8")
    manifest = read_manifest(variant)
    source = manifest.data["quantization"]["source"]
    assert manifest.data["variant"] == "int8" and not manifest.data["default_for_task"]
    fp32 = SentimentPipeline(load_version(EXPORTED / source["name"] / source["version"]))
    int8 = SentimentPipeline(load_version(variant))
    for a, b in zip(run_pipeline(fp32, TEXTS), run_pipeline(int8, TEXTS), strict=True):  # as served
        assert a.label == b.label
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 0.05


def test_published_int8_variant_records_its_quality_delta() -> None:
    manifest = read_manifest(latest_version_dir("sentiment-bigru-int8")).data
    delta = manifest["quantization"]["quality_delta_vs_fp32"]["macro_f1"]
    assert abs(delta) < 0.02
    assert manifest["metrics"]["served"]["pooled"]["n"] == 2371


@pytest.mark.slow
def test_the_lstm_tagger_gets_integer_lstms_where_the_gru_cannot(tmp_path: pathlib.Path) -> None:
    """onnxruntime has DynamicQuantizeLSTM (no GRU counterpart): the NER BiLSTM-CRF's recurrent weights
    do go int8. Its graph also trips quant_pre_process's symbolic shape inference, which must fall back."""
    report = quantize(latest_version_dir("ner-bilstm-crf"), tmp_path / "1")
    assert report["ops_int8"].get("DynamicQuantizeLSTM", 0) == report["ops_fp32"]["LSTM"] >= 1
    assert "LSTM" not in report["ops_int8"]
    assert report["bytes"]["int8"] < report["bytes"]["fp32"] / 2


def int8_variants() -> list[pathlib.Path]:
    return sorted(p.parent for p in EXPORTED.glob("*/*/manifest.json")
                  if read_manifest(p.parent).data.get("variant") == "int8")


def numeric_leaves(tree: object, path: str = "") -> list[tuple[str, float]]:
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in numeric_leaves(value, f"{path}.{key}")]
    return [(path, float(tree))] if isinstance(tree, int | float) else []


@pytest.mark.parametrize("variant", int8_variants(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_int8_variant_names_its_source_and_records_a_small_quality_delta(variant: pathlib.Path) -> None:
    manifest = read_manifest(variant).data
    quantization = manifest["quantization"]
    assert not manifest["default_for_task"]  # fp32 stays the default; int8 is chosen by name or config
    source_dir = EXPORTED / quantization["source"]["name"] / quantization["source"]["version"]
    if source_dir.is_dir():  # a superseded source lives on in git history only
        assert read_manifest(source_dir).task == manifest["task"]
    deltas = numeric_leaves(quantization["quality_delta_vs_fp32"])
    assert deltas
    for name, delta in deltas:  # BLEU/chrF in points, F1/HR/NDCG/accuracy as fractions
        assert abs(delta) < (2.0 if "bleu" in name or "chrf" in name else 0.02), (name, delta)
    assert quantization["bytes"]["int8"] < quantization["bytes"]["fp32"]
    # Quality numbers in a variant's manifest are its own: the source's dev or test metrics never ride along.
    assert "dev_metrics" not in manifest
    # The fp32 graph's parity with torch is recorded as the source's, not as if the int8 graph had it.
    assert not {"parity", "parity_vs_torch"} & set(manifest)
