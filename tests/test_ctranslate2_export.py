"""CTranslate2 conversion of our Transformer (bench/converters/ctranslate2_export.py): the converted model
decodes the held-out verses greedily to exactly the tokens the served ONNX pipeline produces."""

from __future__ import annotations

import pathlib

import ctranslate2
import pytest
from exported_models import latest_version_dir

from bench.converters.ctranslate2_export import convert_version, converted_model
from service.pipelines.output_constraints import UNCONSTRAINED
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version
from training.data.translation import load_splits

pytestmark = pytest.mark.slow  # converts the Transformer to CTranslate2 and decodes the test verses

SAMPLE_EVERY = 60  # ~18 verses spread over the 40 test chapters


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    version = latest_version_dir("transformer")
    return version, convert_version(version, tmp_path_factory.mktemp("ct2") / "transformer")


def test_greedy_tokens_equal_the_served_onnx_pipeline(converted: tuple[pathlib.Path, pathlib.Path]) -> None:
    version, model_dir = converted
    pipeline = TranslationPipeline(load_version(version, intra_op_threads=1))
    pipeline.constraints = UNCONSTRAINED  # CTranslate2 decodes without our output rules: the model's own choices
    translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type="float32", intra_threads=1)
    texts = [pair.english for pair in load_splits()[0]["test"][::SAMPLE_EVERY]]
    assert len(texts) >= 15
    for text in texts:
        ours = pipeline([TranslationRequest(text, DecodeOptions(beam_size=1))])[0]
        source = pipeline.tokenizer.encode(text, add_special_tokens=False).tokens
        budget = pipeline.max_steps(ours.source_token_count, DecodeOptions())
        theirs = translator.translate_batch([source], beam_size=1, max_decoding_length=budget)[0].hypotheses[0]
        assert theirs == ours.hypotheses[0].tokens, text


def test_conversion_is_cached_per_version_checksums(converted: tuple[pathlib.Path, pathlib.Path],
                                                    tmp_path: pathlib.Path) -> None:
    version, _ = converted
    first = converted_model(version, tmp_path)
    stamp = (first / "model.bin").stat().st_mtime_ns
    assert converted_model(version, tmp_path) == first and (first / "model.bin").stat().st_mtime_ns == stamp
