"""The Transformer's int8 variant: both graphs quantized (every weight matrix product, not the attention
products of activations), published with the quality measured through the served pipeline on the same
test chapters as its fp32 source, and a delta that is what the two manifests say."""

from __future__ import annotations

import pytest
from exported_models import EXPORTED, latest_version_dir

from service.batching.runs import NO_LIMIT, items_per_run_for, run_pipeline
from service.model.manifest import read_manifest
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version

VARIANT = "transformer-int8"
SETTINGS = ("greedy", "beam4")


@pytest.fixture(scope="module")
def manifests() -> tuple[dict, dict]:
    variant = read_manifest(latest_version_dir(VARIANT)).data
    source = variant["quantization"]["source"]
    return variant, read_manifest(EXPORTED / source["name"] / source["version"]).data


def test_variant_is_an_int8_copy_of_the_served_transformer(manifests: tuple[dict, dict]) -> None:
    variant, source = manifests
    assert variant["variant"] == "int8" and not variant["default_for_task"] and variant["task"] == "translation"
    # The source's graphs as they are, or as they were before their shared weights moved to one file
    # (training/export/shared_weights.py: same weights, same outputs, new checksums).
    source_graphs = {g: source["files"][g] for g in source["onnx"]["graphs"]}
    before_repackaging = source["onnx"].get("external_data", {}).get("repackaged_from_sha256")
    assert variant["quantization"]["source"]["sha256"] in (source_graphs, before_repackaging)
    # The decoding contract is the source's; the confidence is calibrated on each model's own outputs
    # (training/calibrate_translation.py), so the int8 variant has coefficients of its own.
    def contract(decoding: dict) -> dict:
        return {k: v for k, v in decoding.items() if k != "confidence"}

    assert contract(variant["decoding"]) == contract(source["decoding"])
    assert "confidence" in variant["decoding"] and "confidence" in source["decoding"]
    assert variant["data"]["test_sha256"] == source["data"]["test_sha256"]


def test_every_weight_matmul_is_integer_in_both_graphs(manifests: tuple[dict, dict]) -> None:
    report = manifests[0]["quantization"]
    assert set(report["graphs"]) == {"encoder.onnx", "decoder_step.onnx"}
    for graph in report["graphs"].values():
        assert graph["ops_int8"]["MatMulInteger"] >= 6 and graph["bytes"]["int8"] < graph["bytes"]["fp32"] / 2.5
    # 9 attentions (3 encoder self, 3 decoder self, 3 cross) x 2 products of activations stay float:
    # queries x keys and weights x values. Everything else was a weight and is now integer.
    assert report["ops_int8"]["MatMul"] == 18
    assert report["ops_int8"]["MatMulInteger"] == report["ops_fp32"]["MatMul"] - 18


def test_quality_is_recorded_on_the_full_test_split_with_its_delta(manifests: tuple[dict, dict]) -> None:
    variant, source = manifests
    metrics, delta = variant["metrics"], variant["quantization"]["quality_delta_vs_fp32"]
    assert metrics["split"] == "test" and metrics["n"] == source["metrics"]["n"] == 1091
    # The delta was recorded when the variant was made, before the output rules (docs/translation.md): it is
    # checked against the figures both manifests keep from before them.
    before, source_before = metrics["before_output_rules"], source["metrics"]["before_output_rules"]
    for setting in SETTINGS:
        for key in ("bleu", "chrf"):
            measured = before[setting][key] - source_before[setting][key]
            assert delta[setting][key] == pytest.approx(measured, abs=0.011)
            assert abs(delta[setting][key]) < 1.0  # int8 costs well under a BLEU point here


def test_variant_translates_like_its_source() -> None:
    variant = latest_version_dir(VARIANT)
    source = read_manifest(variant).data["quantization"]["source"]
    fp32 = TranslationPipeline(load_version(EXPORTED / source["name"] / source["version"], intra_op_threads=1))
    int8 = TranslationPipeline(load_version(variant, intra_op_threads=1))
    texts = ["In the beginning, God created the heavens and the earth.", "Jesus wept.",
             "Yahweh spoke to Moses, saying,"]
    requests = [TranslationRequest(t, DecodeOptions(beam_size=1)) for t in texts]
    same = sum(a.hypotheses[0].tokens == b.hypotheses[0].tokens for a, b in zip(fp32(requests), int8(requests),
                                                                                   strict=True))
    assert same >= 2, "int8 greedy output should mostly equal fp32 on short, frequent verses"


# Eight consecutive dev verses (Genesis 11:1-8). Decoded as one batch by the int8 graphs, verses 3 and 6
# came out different from decoding each alone (greedy; 3 of 8 with beam 4): quantize_dynamic computes
# activation scales over the whole batch tensor.
BABEL = [
    "The whole earth was of one language and of one speech.",
    "It happened, as they journeyed east, that they found a plain in the land of Shinar; and they lived there.",
    'They said one to another, "Come, let\'s make brick, and burn them thoroughly." They had brick for stone, '
    "and they used tar for mortar.",
    'They said, "Come, let\'s build us a city, and a tower, whose top reaches to the sky, and let\'s make us a '
    'name; lest we be scattered abroad on the surface of the whole earth."',
    "Yahweh came down to see the city and the tower, which the children of men built.",
    'Yahweh said, "Behold, they are one people, and they have all one language; and this is what they begin to '
    'do. Now nothing will be withheld from them, which they intend to do.',
    "Come, let's go down, and there confuse their language, that they may not understand one another's speech.\"",
    "So Yahweh scattered them abroad from there on the surface of all the earth. They stopped building the city.",
]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_an_int8_translation_does_not_depend_on_the_texts_batched_with_it(beam_size: int) -> None:
    int8 = TranslationPipeline(load_version(latest_version_dir(VARIANT), intra_op_threads=1))
    assert items_per_run_for(int8.model) == 1
    requests = [TranslationRequest(text, DecodeOptions(beam_size=beam_size)) for text in BABEL]
    together = [t.hypotheses[0] for t in run_pipeline(int8, requests)]  # as the server runs a batch
    for request, batched in zip(requests, together, strict=True):
        (alone,) = int8([request])
        assert batched.tokens == alone.hypotheses[0].tokens
        assert batched.log_prob == pytest.approx(alone.hypotheses[0].log_prob, abs=1e-5)


def test_the_fp32_transformer_still_decodes_a_batch_in_one_run() -> None:
    source = read_manifest(latest_version_dir(VARIANT)).data["quantization"]["source"]
    fp32 = TranslationPipeline(load_version(EXPORTED / source["name"] / source["version"], intra_op_threads=1))
    assert items_per_run_for(fp32.model) == NO_LIMIT
