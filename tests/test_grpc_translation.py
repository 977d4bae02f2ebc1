"""seqserve.v1.Translation through the real server (`python -m service`) on the tiny exported Transformer:
unary (greedy, beam, n-best, alignment), streaming, every bad input, health and metrics."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from exported_models import EXPORTED, latest_version_dir
from prometheus_client.parser import text_string_to_metric_families
from seqserve.v1 import translation_pb2, translation_pb2_grpc

TEXTS = ["Jesus wept.", "In the beginning, God created the heavens and the earth."]
Options = translation_pb2.DecodingOptions


@pytest.fixture(scope="module")
def stub(translation_server) -> translation_pb2_grpc.TranslationStub:
    with grpc.insecure_channel(translation_server.target) as channel:
        yield translation_pb2_grpc.TranslationStub(channel)


def translate(stub, texts: list[str], model: str = "", **options) -> translation_pb2.TranslateResponse:
    request = translation_pb2.TranslateRequest(texts=texts, model=model, options=Options(**options))
    return stub.Translate(request, timeout=30)


def stream(stub, text: str, model: str = "", max_output_tokens: int = 0) -> list[translation_pb2.TranslatePiece]:
    request = translation_pb2.TranslateStreamRequest(text=text, model=model, max_output_tokens=max_output_tokens)
    return list(stub.TranslateStream(request, timeout=30))


def test_greedy_translates_every_text_and_names_the_model(stub) -> None:
    response = translate(stub, TEXTS, beam_size=1, max_output_tokens=12)
    assert (response.model.name, response.model.version) == ("transformer", "1")
    assert len(response.results) == 2
    for result in response.results:
        assert len(result.hypotheses) == 1
        best = result.hypotheses[0]
        assert 1 <= len(best.tokens) <= 12 and best.log_prob <= 0
        assert not result.HasField("alignment")


def test_beam_search_returns_n_best_sorted_distinct_with_an_alignment(stub) -> None:
    response = translate(stub, TEXTS[:1], "transformer", beam_size=4, n_best=3, max_output_tokens=8,
                         return_alignment=True)
    result = response.results[0]
    hypotheses = result.hypotheses
    assert len(hypotheses) == 3
    assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
    assert len({tuple(h.tokens) for h in hypotheses}) == 3
    alignment = result.alignment
    assert list(alignment.target_tokens) == list(hypotheses[0].tokens)
    assert alignment.source_tokens[-1] == "[EOS]" and len(alignment.source_tokens) == result.source_tokens
    assert len(alignment.weights) == len(alignment.target_tokens) * len(alignment.source_tokens)


def test_stream_emits_the_greedy_translation_piece_by_piece(stub) -> None:
    unary = translate(stub, TEXTS[1:], beam_size=1, max_output_tokens=10).results[0].hypotheses[0]
    pieces = stream(stub, TEXTS[1], max_output_tokens=10)
    assert [p.index for p in pieces] == list(range(len(pieces)))
    assert [p.token for p in pieces] == list(unary.tokens)
    assert "".join(p.text for p in pieces) == unary.text
    assert {(p.model.name, p.model.version) for p in pieces} == {("transformer", "1")}


@pytest.mark.parametrize(("texts", "options", "code", "message"), [
    ([], {}, "INVALID_ARGUMENT", "texts: must hold at least 1 text"),
    (["fine", "  "], {}, "INVALID_ARGUMENT", "texts[1]: is empty"),
    (["x" * 2001], {}, "INVALID_ARGUMENT", "texts[0]: 2001 characters exceeds the limit of 2000"),
    (["fine", "zq " * 300], {}, "INVALID_ARGUMENT", "texts[1]: 902 source tokens exceeds the limit of 256"),
    (["fine"], {"beam_size": 17}, "INVALID_ARGUMENT", "options.beam_size: 17 exceeds the limit of 16"),
    (["fine"], {"beam_size": 2, "n_best": 3}, "INVALID_ARGUMENT", "options.n_best: 3 exceeds options.beam_size (2)"),
    (["fine"], {"max_output_tokens": 257}, "INVALID_ARGUMENT",
     "options.max_output_tokens: 257 exceeds the limit of 256"),
    (["fine"], {"length_penalty": 3.0}, "INVALID_ARGUMENT", "options.length_penalty: 3.0 is outside [0, 2.0]"),
])
def test_bad_translate_requests_name_the_field_and_the_limit(stub, texts, options, code, message) -> None:
    with pytest.raises(grpc.RpcError) as error:
        translate(stub, texts, **options)
    assert (error.value.code().name, error.value.details()) == (code, message)


def test_an_unknown_model_is_not_found_for_both_calls(stub) -> None:
    for call in (lambda: translate(stub, ["fine"], "seq2seq-attention"), lambda: stream(stub, "fine", "nope")):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert "is not loaded for task 'translation' (loaded: transformer)" in error.value.details()


@pytest.mark.parametrize(("text", "max_output_tokens", "message"), [
    (" ", 0, "text: is empty"),
    ("x" * 2001, 0, "text: 2001 characters exceeds the limit of 2000"),
    ("zq " * 300, 0, "text: 902 source tokens exceeds the limit of 256"),
    ("fine", 300, "max_output_tokens: 300 exceeds the limit of 256"),
])
def test_bad_stream_requests_name_the_field_and_the_limit(stub, text, max_output_tokens, message) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stream(stub, text, max_output_tokens=max_output_tokens)
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_calls_and_stages_are_in_the_metrics(stub, translation_server) -> None:
    translate(stub, TEXTS[:1], beam_size=1, max_output_tokens=3)
    stream(stub, TEXTS[0], max_output_tokens=3)
    with urllib.request.urlopen(translation_server.metrics_url, timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    calls = {(s.labels["method"], s.labels["code"]) for s in families["seqserve_requests"].samples
             if s.labels.get("service") == "seqserve.v1.Translation" and s.value > 0}
    assert {("Translate", "OK"), ("TranslateStream", "OK")} <= calls
    stages = {s.labels["stage"] for s in families["seqserve_stage_duration_seconds"].samples
              if s.labels.get("model") == "transformer"}
    assert {"tokenize", "inference", "postprocess"} <= stages
    assert translation_server.health("seqserve.v1.Translation") == 1  # SERVING


@pytest.mark.parametrize("method", ["Translate", "TranslateStream"])
def test_invalid_utf8_is_invalid_argument_for_both_calls(translation_server, method) -> None:
    with grpc.insecure_channel(translation_server.target) as channel:
        path = f"/seqserve.v1.Translation/{method}"
        # A hand-rolled client can send a string field (texts / text, field 1) holding invalid UTF-8.
        raw = b"\x0a\x03\xff\xfe\x41"
        with pytest.raises(grpc.RpcError) as error:
            if method == "Translate":
                channel.unary_unary(path)(raw, timeout=10)
            else:
                list(channel.unary_stream(path)(raw, timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("request: not a valid protobuf message")


@pytest.mark.skipif(not (EXPORTED / "transformer").is_dir(), reason="no committed translation model")
def test_the_committed_transformer_serves_greedy_beam_and_stream(channel) -> None:
    committed = translation_pb2_grpc.TranslationStub(channel)
    response = translate(committed, ["Jesus wept.", "God is love."], "transformer", beam_size=4, n_best=2)
    assert response.model.version == latest_version_dir("transformer").name
    assert all(r.hypotheses[0].text and len(r.hypotheses) == 2 for r in response.results)
    pieces = stream(committed, "Jesus wept.", "transformer")
    greedy = translate(committed, ["Jesus wept."], "transformer", beam_size=1).results[0].hypotheses[0]
    assert "".join(p.text for p in pieces) == greedy.text
