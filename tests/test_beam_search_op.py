"""onnxruntime's com.microsoft.BeamSearch op over our two Transformer graphs (bench/converters/beam_search_op.py):
the whole search inside onnxruntime finds the hypotheses our Python beam search finds."""

from __future__ import annotations

import pathlib

import pytest
from exported_models import latest_version_dir

from bench.converters.beam_search_op import BeamSearchOp
from service.pipelines.output_constraints import UNCONSTRAINED
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version
from training.data.translation import load_splits

BEAM = 4


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[TranslationPipeline, BeamSearchOp]:
    version = latest_version_dir("transformer")
    pipeline = TranslationPipeline(load_version(version, intra_op_threads=1))
    pipeline.constraints = UNCONSTRAINED  # the op has no output rules: compare the model's own choices
    return pipeline, BeamSearchOp(version, tmp_path_factory.mktemp("beamsearch"), threads=1)


def test_op_finds_the_same_best_hypotheses_as_our_beam_search(
        engines: tuple[TranslationPipeline, BeamSearchOp]) -> None:
    pipeline, op = engines
    texts = [pair.english for pair in load_splits()[0]["test"][::100]]
    same = 0
    for text in texts:
        ours = pipeline([TranslationRequest(text, DecodeOptions(beam_size=BEAM, length_penalty=0.6))])[0]
        source = pipeline.source_ids(text)
        theirs = op.translate([source], BEAM, pipeline.max_steps(len(source), DecodeOptions()))[0]
        assert theirs, text
        same += [pipeline.tokenizer.id_to_token(i) for i in theirs] == ours.hypotheses[0].tokens
    # The op ranks finished hypotheses by log-prob / length ** 0.6, ours by the GNMT penalty: a rare
    # near-tie may rank differently, nothing more.
    assert same >= len(texts) - 1, f"{same} of {len(texts)} identical"


def test_op_decodes_a_padded_batch_like_single_sentences(engines: tuple[TranslationPipeline, BeamSearchOp]) -> None:
    pipeline, op = engines
    texts = ("Jesus wept.", "In the beginning, God created the heavens and the earth.")
    sources = [pipeline.source_ids(t) for t in texts]
    alone = [op.translate([s], BEAM, 30)[0] for s in sources]
    assert op.translate(sources, BEAM, 30) == alone


def test_model_is_rebuilt_only_when_the_version_changes(tmp_path: pathlib.Path) -> None:
    version = latest_version_dir("transformer")
    BeamSearchOp(version, tmp_path, threads=1)
    built = next(tmp_path.glob("*/beam_search.onnx"))
    stamp = built.stat().st_mtime_ns
    BeamSearchOp(version, tmp_path, threads=1)
    assert built.stat().st_mtime_ns == stamp
