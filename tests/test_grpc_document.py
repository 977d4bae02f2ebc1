"""Document.Analyze over gRPC, against a real server on the committed document model: the answer, its
offsets, the `seqserve document` command, and bad input refused with a status naming field and limit."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import launch_server
from exported_models import latest_version_dir
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqserve.v1 import document_pb2, document_pb2_grpc

from service.client.cli import main
from service.config import Settings
from service.grpc.document_servicer import DOCUMENT_CHARS_PER_TEXT_CHARS
from service.pipelines.document import split_sentences

VERSION_DIR = latest_version_dir("han-vader-docs")
MODEL = "han-vader-docs"
TEXTS = ["The battery lasts all day. The screen is bright! I love this phone.",
         "Shipping took a month. The case cracked on the first drop. Avoid it."]


@pytest.fixture(scope="module")
def document_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server on the document model alone (a light start)."""
    models = tmp_path_factory.mktemp("document-models")
    shutil.copytree(VERSION_DIR, models / MODEL / VERSION_DIR.name)
    running = launch_server(tmp_path_factory.mktemp("document-server") / "server.log", models)
    try:
        running.wait_until_serving()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def channel(document_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(document_server.target) as open_channel:
        yield open_channel


@pytest.fixture(scope="module")
def analyze(channel: grpc.Channel) -> Callable[..., document_pb2.AnalyzeDocumentResponse]:
    stub = document_pb2_grpc.DocumentStub(channel)

    def call(texts: list[str], model: str = "") -> document_pb2.AnalyzeDocumentResponse:
        return stub.Analyze(document_pb2.AnalyzeDocumentRequest(texts=texts, model=model), timeout=30)

    return call


def refusal(analyze: Callable[..., Any], texts: list[str], model: str = "") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        analyze(texts, model)
    return caught.value


def test_analyze_answers_documents_sentences_and_words(analyze: Callable[..., Any]) -> None:
    response = analyze(TEXTS)
    assert (response.model.name, response.model.version) == (MODEL, VERSION_DIR.name)
    assert len(response.results) == 2
    for text, result in zip(TEXTS, response.results, strict=True):
        assert [p.label for p in result.probabilities] == ["negative", "neutral", "positive"]
        assert result.label == max(result.probabilities, key=lambda p: p.probability).label
        assert [(s.start, s.end) for s in result.sentences] == split_sentences(text)
        assert sum(s.weight for s in result.sentences) == pytest.approx(1, abs=1e-4)
        for sentence in result.sentences:
            assert sentence.label in {"negative", "neutral", "positive"}
            assert sum(t.weight for t in sentence.tokens) == pytest.approx(1, abs=1e-4)
            assert "".join(text[t.start : t.end] for t in sentence.tokens) == "".join(
                text[sentence.start : sentence.end].split())


def test_omit_tokens_keeps_every_sentence_and_drops_only_the_words(channel: grpc.Channel,
                                                                   analyze: Callable[..., Any]) -> None:
    full = analyze(TEXTS)
    lean = document_pb2_grpc.DocumentStub(channel).Analyze(
        document_pb2.AnalyzeDocumentRequest(texts=TEXTS, omit_tokens=True), timeout=30)
    assert all(s.tokens for r in full.results for s in r.sentences)
    assert not any(s.tokens for r in lean.results for s in r.sentences)
    for result in full.results:
        for sentence in result.sentences:
            del sentence.tokens[:]
    assert lean == full


def test_by_name_and_by_default_is_the_same_model(analyze: Callable[..., Any]) -> None:
    assert analyze(TEXTS[:1], MODEL) == analyze(TEXTS[:1])


def test_a_document_alone_and_with_others_gets_the_same_answer(analyze: Callable[..., Any]) -> None:
    together = analyze(TEXTS).results
    for text, in_batch in zip(TEXTS, together, strict=True):
        (alone,) = analyze([text]).results
        assert alone.label == in_batch.label
        assert [p.probability for p in alone.probabilities] == pytest.approx(
            [p.probability for p in in_batch.probabilities], abs=1e-5)


def test_bad_input_is_refused_naming_the_field_and_the_limit(analyze: Callable[..., Any]) -> None:
    error = refusal(analyze, [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "texts" in error.details()
    error = refusal(analyze, [TEXTS[0], " \u200b "])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "texts[1]: is empty" in error.details()

    error = refusal(analyze, [TEXTS[0], " ".join(["Good."] * 97)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "texts[1].sentences: 97 sentences exceeds the limit of 96" in error.details()

    error = refusal(analyze, ["Fine. " + " ".join(["word"] * 300)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "texts[0].sentences[1]: 300 tokens exceeds the limit of 256" in error.details()

    limit = Settings().max_text_chars * DOCUMENT_CHARS_PER_TEXT_CHARS
    error = refusal(analyze, ["a" * (limit + 1)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"texts[0]: {limit + 1} characters exceeds the limit of {limit}" in error.details()

    error = refusal(analyze, TEXTS, "no-such-model")
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no-such-model" in error.details()


def test_a_long_review_is_served(analyze: Callable[..., Any]) -> None:
    # Longer than the per-text limit of the sentence calls, well within a document's.
    text = " ".join(["The zoom is smooth and the pictures are sharp."] * 60)
    assert len(text) > Settings().max_text_chars
    (result,) = analyze([text]).results
    assert len(result.sentences) == 60


def test_the_service_reports_serving(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="seqserve.v1.Document"), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_cli_document_prints_the_label_then_each_sentence(document_server: Any, capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    code = main(["--target", document_server.target, "document", TEXTS[0]])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split()[1] in {"negative", "neutral", "positive"} and "positive 0." in out[0]
    assert out[1].lstrip().startswith("weight 0.") and out[1].endswith("The battery lasts all day.")
    assert out[2].lstrip().startswith("words")
    assert len([line for line in out if line.lstrip().startswith("weight")]) == 3
    assert out[-1] == f"model {MODEL} version {VERSION_DIR.name}"


def test_cli_document_no_tokens_prints_the_sentences_without_words(document_server: Any,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--target", document_server.target, "document", "--no-tokens", TEXTS[0]])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len([line for line in out if line.lstrip().startswith("weight")]) == 3
    assert not [line for line in out if line.lstrip().startswith("words")]


def test_cli_refusal_exits_2(document_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--target", document_server.target, "document", "--model", "nope", "Hello."])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: NOT_FOUND")
