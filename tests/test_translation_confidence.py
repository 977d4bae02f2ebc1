"""The translation confidence (issue #19): features, the calibrated score, its absence without a manifest
section, decoding left unchanged, the API fields and the --min-translation-confidence flag through a real
server, and proto compatibility."""

from __future__ import annotations

import io
import pathlib
import shutil

import grpc
import numpy as np
import pytest
from exported_models import EXPORTED
from pydantic import ValidationError
from seqserve.v1 import models_pb2, translation_pb2, translation_pb2_grpc

from service.batching.runs import run_pipeline
from service.client.cli import print_translations
from service.model.manifest import read_manifest, republish_manifest
from service.model.manifest_schema import ConfidenceSection
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest, run_to_end
from service.pipelines.translation_confidence import ConfidenceInputs, confidence_features
from service.runtime.version_loader import load_version

COMMITTED = ["transformer", "transformer-int8", "seq2seq-attention", "convs2s"]
# Held-out test verses (docs/translation.md) and out-of-domain sentences of the test half of
# training/data/out_of_domain_en.tsv: none was used to fit the confidence.
VERSES = [
    "It shall happen at that day, that I will break the bow of Israel in the valley of Jezreel.",
    "Moses heard the people weeping throughout their families, every man at the door of his tent: and the "
    "anger of Yahweh was kindled greatly; and Moses was displeased.",
]
MODERN = [
    "The printer driver is not compatible with the latest operating system.",
    "I left my phone charger at the office again.",
    "Shares of the electric carmaker fell eight percent after the quarterly earnings report.",
]
GREEDY = DecodeOptions(beam_size=1)
BEAM = DecodeOptions(beam_size=4, n_best=2)


@pytest.fixture(scope="module")
def pipelines() -> dict[str, TranslationPipeline]:
    return {name: TranslationPipeline(load_version(EXPORTED / name / "1", intra_op_threads=1)) for name in COMMITTED}


def without_confidence(source: pathlib.Path, target: pathlib.Path, name: str | None = None) -> pathlib.Path:
    """A copy of a version whose manifest lacks decoding.confidence (the graphs copied unchanged)."""
    shutil.copytree(source, target)
    manifest = read_manifest(target)
    decoding = {k: v for k, v in manifest.data["decoding"].items() if k != "confidence"}
    changes = {"decoding": decoding, **({"name": name, "default_for_task": False} if name else {})}
    republish_manifest(target, changes)
    return target


def translate(pipeline: TranslationPipeline, texts: list[str], options: DecodeOptions = GREEDY) -> list:
    return run_pipeline(pipeline, [TranslationRequest(t, options) for t in texts])


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_models_give_a_deterministic_confidence_in_0_1(pipelines, name: str) -> None:
    pipeline = pipelines[name]
    for options in (GREEDY, BEAM):
        first = translate(pipeline, [*VERSES, *MODERN], options)
        again = translate(pipeline, [*VERSES, *MODERN], options)
        for a, b in zip(first, again, strict=True):
            assert a.confidence is not None and 0.0 <= a.confidence <= 1.0
            assert a.confidence == b.confidence  # same inputs, same graphs: the same number
            assert all(np.isfinite(v) for v in a.features.values())


@pytest.mark.parametrize("name", COMMITTED)
def test_held_out_verses_rank_above_modern_sentences(pipelines, name: str) -> None:
    # With the model's default options (beam 4), as calibrated. Every verse above every modern sentence.
    results = translate(pipelines[name], [*VERSES, *MODERN], pipelines[name].defaults)
    verses = [r.confidence for r in results[: len(VERSES)]]
    modern = [r.confidence for r in results[len(VERSES):]]
    assert min(verses) > max(modern), (verses, modern)


def test_a_model_without_the_section_reports_no_confidence_and_decodes_the_same(pipelines, tmp_path) -> None:
    plain = TranslationPipeline(load_version(without_confidence(EXPORTED / "transformer" / "1", tmp_path / "1")))
    assert plain.confidence is None
    for options in (GREEDY, BEAM, DecodeOptions(beam_size=2, alignment=True)):
        with_section = translate(pipelines["transformer"], [*VERSES, *MODERN], options)
        without = translate(plain, [*VERSES, *MODERN], options)
        for a, b in zip(with_section, without, strict=True):
            assert b.confidence is None and b.features is None
            # Computing the confidence keeps the attention, and nothing else changes: bit for bit.
            assert a.hypotheses == b.hypotheses
            assert (a.alignment is None) == (b.alignment is None)
            if a.alignment is not None:
                assert np.array_equal(a.alignment.weights, b.alignment.weights)


@pytest.mark.parametrize("options", [GREEDY, BEAM], ids=["greedy", "beam"])
def test_token_log_probs_add_up_to_the_hypothesis_log_prob(pipelines, options: DecodeOptions) -> None:
    pipeline = pipelines["transformer"]
    ids = [pipeline.source_ids(t) for t in VERSES]
    src_ids, src_mask = pipeline._pad(ids)
    steps = np.array([pipeline.max_steps(len(i), options) for i in ids])
    for hypotheses in run_to_end(pipeline.search(src_ids, src_mask, steps, options, None)):
        for h in hypotheses:
            assert len(h.token_log_probs) == h.length
            assert sum(h.token_log_probs) == pytest.approx(h.log_prob, abs=1e-3)


def test_features_of_a_hand_made_translation() -> None:
    attention = np.array([[0.9, 0.05, 0.05, 0.0], [0.1, 0.8, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05]])
    features = confidence_features(
        ConfidenceInputs("two words", source_ids=[5, 6, 1, 3], output_ids=[7, 8, 7, 8], token_log_probs=[-1.0, -3.0],
                         attention=np.vstack([attention, attention[:1]])),
        unknown_ids=frozenset({1}), coverage_threshold=0.5)
    assert features["subwords_per_word"] == 1.5          # 3 subwords over 2 words
    assert features["unknown_rate"] == pytest.approx(1 / 3)
    assert features["coverage"] == pytest.approx(2 / 3)  # subwords 0 and 1 get >= 0.5 in total, 2 does not
    assert features["mean_log_prob"] == -2.0 and features["min_log_prob"] == -3.0
    assert features["repetition"] == pytest.approx(1 / 3)  # bigrams (7,8) (8,7) (7,8): one repeats
    assert features["log_length_ratio"] == pytest.approx(np.log(5 / 4))
    assert 0.0 < features["attention_entropy"] < 1.0


def test_the_manifest_section_is_checked() -> None:
    with pytest.raises(ValidationError, match="one value per feature"):
        ConfidenceSection(features=["coverage", "repetition"], mean=[0.0], scale=[1.0, 1.0],
                          coefficients=[1.0, 1.0], intercept=0.0)
    with pytest.raises(ValidationError, match="scale"):
        ConfidenceSection(features=["coverage"], mean=[0.0], scale=[0.0], coefficients=[1.0], intercept=0.0)
    with pytest.raises(ValidationError):
        ConfidenceSection(features=["no_such_feature"], mean=[0.0], scale=[1.0], coefficients=[1.0], intercept=0.0)


def test_the_proto_grows_compatibly() -> None:
    result = translation_pb2.TranslationResult.DESCRIPTOR.fields_by_name
    piece = translation_pb2.TranslatePiece.DESCRIPTOR.fields_by_name
    assert {n: result[n].number for n in ("hypotheses", "alignment", "source_tokens")} == {
        "hypotheses": 1, "alignment": 2, "source_tokens": 3}
    assert {n: piece[n].number for n in ("token", "text", "index", "model")} == {
        "token": 1, "text": 2, "index": 3, "model": 4}
    assert (result["confidence"].number, result["low_confidence"].number) == (4, 5)
    assert (piece["confidence"].number, piece["low_confidence"].number) == (5, 6)
    # A message from before the fields parses with the confidence unset (not 0).
    old = translation_pb2.TranslationResult(source_tokens=7).SerializeToString()
    parsed = translation_pb2.TranslationResult.FromString(old)
    assert not parsed.HasField("confidence") and parsed.source_tokens == 7


def test_the_cli_prints_the_confidence_and_the_flag() -> None:
    response = translation_pb2.TranslateResponse(
        results=[translation_pb2.TranslationResult(hypotheses=[translation_pb2.Hypothesis(text="a", score=-1)],
                                                   confidence=0.25, low_confidence=True),
                 translation_pb2.TranslationResult(hypotheses=[translation_pb2.Hypothesis(text="b", score=-1)])],
        model=models_pb2.ModelRef(name="m", version="1"))
    out = io.StringIO()
    print_translations(["x", "y"], response, out)
    lines = out.getvalue().splitlines()
    assert lines[1].endswith("(score -1.000, confidence 0.25, LOW)")
    assert lines[3].endswith("(score -1.000)")  # no confidence: nothing shown, not a 0


@pytest.fixture(scope="module")
def flagging_server(tmp_path_factory: pytest.TempPathFactory):
    """A real server over the committed transformer and a copy without the section, flagging under 0.5."""
    from conftest import launch_server

    root = tmp_path_factory.mktemp("confidence")
    shutil.copytree(EXPORTED / "transformer" / "1", root / "models" / "transformer" / "1")
    without_confidence(EXPORTED / "transformer" / "1", root / "models" / "transformer-plain" / "1",
                       name="transformer-plain")
    server = launch_server(root / "server.log", root / "models", ["--min-translation-confidence", "0.5"])
    try:
        server.wait_until_serving()
        with grpc.insecure_channel(server.target) as channel:
            yield translation_pb2_grpc.TranslationStub(channel)
    finally:
        server.stop()


def test_the_server_returns_and_flags_the_confidence(flagging_server, pipelines) -> None:
    response = flagging_server.Translate(translation_pb2.TranslateRequest(texts=[VERSES[0], MODERN[0]]), timeout=60)
    expected = translate(pipelines["transformer"], [VERSES[0], MODERN[0]], pipelines["transformer"].defaults)
    verse, modern = response.results
    assert verse.HasField("confidence") and modern.HasField("confidence")
    # float32 on the wire; computed by the same code on the same graphs
    assert verse.confidence == pytest.approx(expected[0].confidence, abs=1e-6)
    assert modern.confidence == pytest.approx(expected[1].confidence, abs=1e-6)
    assert (verse.low_confidence, modern.low_confidence) == (verse.confidence < 0.5, modern.confidence < 0.5)
    assert modern.low_confidence and not verse.low_confidence  # flagged, and still translated
    assert modern.hypotheses[0].text


def test_the_stream_carries_the_confidence_on_its_last_piece(flagging_server, pipelines) -> None:
    pieces = list(flagging_server.TranslateStream(translation_pb2.TranslateStreamRequest(text=MODERN[0]), timeout=60))
    assert [p.HasField("confidence") for p in pieces] == [False] * (len(pieces) - 1) + [True]
    greedy = translate(pipelines["transformer"], [MODERN[0]])[0]
    assert "".join(p.text for p in pieces) == greedy.hypotheses[0].text
    assert pieces[-1].confidence == pytest.approx(greedy.confidence, abs=1e-5)
    assert pieces[-1].low_confidence == (pieces[-1].confidence < 0.5)


def test_a_model_without_the_section_answers_without_confidence_and_is_never_flagged(flagging_server) -> None:
    request = translation_pb2.TranslateRequest(texts=[MODERN[0]], model="transformer-plain")
    result = flagging_server.Translate(request, timeout=60).results[0]
    assert not result.HasField("confidence") and not result.low_confidence
    pieces = list(flagging_server.TranslateStream(
        translation_pb2.TranslateStreamRequest(text=MODERN[0], model="transformer-plain"), timeout=60))
    assert pieces and not any(p.HasField("confidence") or p.low_confidence for p in pieces)
