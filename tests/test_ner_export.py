"""NER export: onnxruntime matches torch (tiny models exported here, and the committed versions'
recorded parity), padding never changes a sentence's emissions, numpy Viterbi on the exported
emissions equals the torch CRF's decoding."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from exported_models import EXPORTED, latest_version_dir

from service.pipelines.crf_decoding import CRFParameters, viterbi
from training.data.ner import TAGS, load_splits
from training.export.ner import _export_bilstm, _export_minilm, _session, parity
from training.ner_bilstm_recipe import build_bilstm_recipe
from training.train_ner import Recipe, minilm_recipe


@pytest.fixture(scope="module")
def parts():
    return load_splits()[0]


def perturbed(recipe: Recipe, seed: int) -> Recipe:
    """Random weights far enough from the init that the CRF transitions matter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in recipe.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    recipe.model.eval()
    return recipe


@pytest.fixture(scope="module")
def bilstm(parts, tmp_path_factory):
    recipe = perturbed(build_bilstm_recipe(parts["train"][:200], Recipe), seed=3)
    rows = recipe.encode(parts["dev"][:24])
    batches = [recipe.collate(rows[i : i + 8]) for i in range(0, 24, 8)]
    out = tmp_path_factory.mktemp("ner-bilstm")
    _export_bilstm(recipe, out, batches[0])
    return recipe, out, batches, rows


@pytest.mark.slow
def test_bilstm_emissions_match_torch(bilstm) -> None:
    recipe, out, batches, _ = bilstm
    report = parity(recipe, out / "model.onnx", batches, "bilstm-crf")
    assert report["max_abs_diff"] < 1e-4
    assert report["argmax_agreement"] == 1.0


@pytest.mark.slow
def test_padding_does_not_change_a_sentences_emissions(bilstm) -> None:
    recipe, out, _, rows = bilstm
    session = _session(out / "model.onnx")
    inputs, _ = recipe.collate(rows[:8])
    batched = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    for i in range(8):
        alone, _ = recipe.collate([rows[i]])
        single = session.run(None, {k: v.numpy() for k, v in alone.items()})[0]
        np.testing.assert_allclose(batched[i, : single.shape[1]], single[0], atol=1e-5)


@pytest.mark.slow
def test_numpy_viterbi_on_exported_emissions_equals_torch_crf(bilstm) -> None:
    recipe, out, batches, _ = bilstm
    crf = CRFParameters.from_json(json.loads((out / "crf.json").read_text()))
    session = _session(out / "model.onnx")
    for inputs, _ in batches:
        with torch.no_grad():
            expected = recipe.model.crf.viterbi(recipe.model(*inputs.values()), inputs["mask"])
        emissions = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        lengths = inputs["mask"].sum(1).tolist()
        assert [viterbi(emissions[i, :n], crf) for i, n in enumerate(lengths)] == expected
        assert any(len(set(path)) > 1 for path in expected)  # not a degenerate all-one-tag decoding


@pytest.mark.slow
def test_minilm_fp32_export_matches_torch_and_int8_stays_close(parts, tmp_path) -> None:
    from transformers import BertConfig, BertModel

    from training.models.minilm_tagger import MiniLMTagger

    torch.manual_seed(0)
    tiny = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=30522), add_pooling_layer=False)
    recipe = minilm_recipe(parts["train"][:50], model=MiniLMTagger(len(TAGS), shape_dim=8, encoder=tiny))
    recipe.model.eval()
    rows = recipe.encode(parts["dev"][:16])
    batches = [recipe.collate(rows[i : i + 8]) for i in (0, 8)]
    version_dir = tmp_path / "version"
    version_dir.mkdir()
    exported = _export_minilm(recipe, version_dir, batches[0], tmp_path, batches)
    quantization = exported["quantization"]
    assert [i["name"] for i in exported["onnx"]["inputs"]] == ["input_ids", "attention_mask", "shape_ids"]
    assert exported["ner"]["shape_features"]
    assert quantization["parity_fp32_vs_torch"]["max_abs_diff"] < 1e-4
    assert quantization["parity_int8_vs_torch"]["max_abs_diff"] < 0.05
    assert quantization["bytes"]["int8"] < quantization["bytes"]["fp32"] / 2  # the embeddings dominate
    tokenizer = json.loads((version_dir / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None and tokenizer["truncation"] is None


COMMITTED = [name for name in ("ner-bilstm-crf", "ner-minilm-int8") if (EXPORTED / name).is_dir()]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_versions_recorded_their_measured_parity(name: str) -> None:
    manifest = json.loads((latest_version_dir(name) / "manifest.json").read_text())
    if name == "ner-bilstm-crf":
        assert manifest["parity_vs_torch"]["max_abs_diff"] < 1e-4
        assert manifest["parity_vs_torch"]["argmax_agreement"] == 1.0
    else:
        assert manifest["quantization"]["parity_fp32_vs_torch"]["max_abs_diff"] < 1e-3
        assert manifest["quantization"]["parity_int8_vs_torch"]["argmax_agreement"] > 0.95
    assert manifest["labels"] == list(TAGS)


def test_committed_crf_decodes_like_the_torch_crf() -> None:
    if "ner-bilstm-crf" not in COMMITTED:
        pytest.skip("no committed BiLSTM-CRF")
    from training.models.crf import CRF

    data = json.loads((latest_version_dir("ner-bilstm-crf") / "crf.json").read_text())
    crf = CRF(len(TAGS))
    with torch.no_grad():
        for key in ("start", "end", "transitions"):
            getattr(crf, key).copy_(torch.tensor(data[key]))
    emissions = torch.randn(6, 12, len(TAGS), generator=torch.Generator().manual_seed(1)) * 4
    mask = torch.tensor([[1] * n + [0] * (12 - n) for n in (12, 1, 5, 7, 12, 3)])
    parameters = CRFParameters.from_json(data)
    assert [viterbi(emissions[i, :n].numpy(), parameters) for i, n in enumerate(mask.sum(1).tolist())] == \
        crf.viterbi(emissions, mask)


def test_version_folder_is_what_the_pipeline_expects() -> None:
    if not COMMITTED:
        pytest.skip("no committed NER model")
    for name in COMMITTED:
        files = {p.name for p in latest_version_dir(name).iterdir()}
        expected = {"model.onnx", "labels.json", "manifest.json"} | (
            {"crf.json", "vocab.json"} if name == "ner-bilstm-crf" else {"tokenizer.json"})
        assert expected <= files, name
        assert not any(pathlib.Path(f).suffix == ".data" for f in files)
