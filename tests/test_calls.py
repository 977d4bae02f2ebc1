"""CallRunner: the status code a client sees is the one counted, and internals never reach the client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from service.grpc.calls import Call, CallRunner
from service.grpc.validation import RequestError
from service.metrics.registry import ServingMetrics


class Aborted(Exception):
    pass


class FakeContext:
    """What CallRunner uses from grpc.aio.ServicerContext, recorded for inspection."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), time_remaining: float | None = None) -> None:
        self.metadata = metadata
        self.remaining = time_remaining
        self.aborted: tuple[grpc.StatusCode, str, Any] | None = None
        self.trailing: Any = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        self.aborted = (code, details, trailing_metadata)
        raise Aborted  # grpc.aio raises AbortError here, ending the handler

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = metadata

    def time_remaining(self) -> float | None:
        return self.remaining


def run(handler: Callable[[Call], Awaitable[str]], context: FakeContext) -> tuple[ServingMetrics, Any]:
    metrics = ServingMetrics()
    runner = CallRunner("seqserve.v1.Test", ["Do"], metrics)
    try:
        result: Any = asyncio.run(runner.run("Do", context, handler))  # type: ignore[arg-type]
    except Aborted:
        result = None
    return metrics, result


def count(metrics: ServingMetrics, code: str, model: str = "", version: str = "") -> float | None:
    labels = {"service": "seqserve.v1.Test", "method": "Do", "model": model, "version": version, "code": code}
    return metrics.registry.get_sample_value("seqserve_requests_total", labels)


def test_a_successful_call_is_counted_ok_under_its_model_and_returns_its_request_id() -> None:
    async def handler(call: Call) -> str:
        call.model = "m"
        return "answer"

    context = FakeContext()
    metrics, result = run(handler, context)
    assert result == "answer"
    assert count(metrics, "OK", model="m") == 1
    (key, request_id), = context.trailing
    assert key == "x-request-id" and len(request_id) == 32
    in_flight = {"service": "seqserve.v1.Test", "method": "Do"}
    assert metrics.registry.get_sample_value("seqserve_requests_in_flight", in_flight) == 0


def test_a_refused_call_gets_its_code_and_message_and_is_counted_with_that_code() -> None:
    async def handler(call: Call) -> str:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "texts: must hold at least 1 text")

    context = FakeContext()
    metrics, _ = run(handler, context)
    assert context.aborted is not None
    assert context.aborted[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "texts: must hold at least 1 text")
    assert count(metrics, "INVALID_ARGUMENT") == 1 and count(metrics, "OK") is None


def test_an_unexpected_error_is_internal_with_a_generic_message_and_logged_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(call: Call) -> str:
        raise RuntimeError("boom in /srv/secret/model.py")

    context = FakeContext(metadata=(("x-request-id", "req-42"),))
    with caplog.at_level(logging.ERROR):
        metrics, _ = run(handler, context)
    assert context.aborted is not None
    code, message, trailing = context.aborted
    assert code == grpc.StatusCode.INTERNAL
    assert message == "internal error (request id req-42)"
    assert trailing == (("x-request-id", "req-42"),)
    assert count(metrics, "INTERNAL") == 1
    # The log keeps what the client must not see: the request id, the error and its traceback.
    assert "req-42" in caplog.text and "boom in /srv/secret/model.py" in caplog.text
    assert "Traceback" in caplog.text


def test_an_unsafe_request_id_from_the_caller_is_replaced() -> None:
    async def handler(call: Call) -> str:
        return call.request_id

    _, result = run(handler, FakeContext(metadata=(("x-request-id", "evil\nlog line"),)))
    assert result != "evil\nlog line" and len(result) == 32


@pytest.mark.parametrize("outcome", ["answer", "queue deadline"])
def test_nothing_is_written_to_a_call_whose_deadline_has_passed(outcome: str) -> None:
    # grpc core has answered DEADLINE_EXCEEDED itself by then; a status or response written after it fails
    # in core and grpc logs an ExecuteBatchError traceback (issue 16, item 6a).
    async def handler(call: Call) -> str:
        if outcome == "queue deadline":
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed in the queue of model m")
        return "answer"

    context = FakeContext(time_remaining=0.0 if outcome == "answer" else 0.0004)
    metrics = ServingMetrics()
    runner = CallRunner("seqserve.v1.Test", ["Do"], metrics)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(runner.run("Do", context, handler))  # type: ignore[arg-type]
    assert context.aborted is None and context.trailing is None
    assert count(metrics, "DEADLINE_EXCEEDED") == 1


def test_a_response_larger_than_the_server_sends_is_refused_resource_exhausted_with_what_to_do() -> None:
    # grpc core would fail to send it after all the work, answer "Sent message larger than max" and log an
    # ExecuteBatchError traceback (found with 40 long texts and alignments under --max-message-bytes 1 MiB).
    from seqserve.v1 import translation_pb2

    from service.grpc.calls import set_max_response_bytes

    big = translation_pb2.TranslateResponse(results=[translation_pb2.TranslationResult(
        alignment=translation_pb2.Alignment(weights=[0.5] * 1000))])

    async def handler(call: Call) -> Any:
        call.model = "m"
        return big

    set_max_response_bytes(big.ByteSize() - 1)
    try:
        context = FakeContext()
        metrics, result = run(handler, context)
        assert result is None and context.aborted is not None
        code, message, _ = context.aborted
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"would be {big.ByteSize()} bytes" in message and "--max-message-bytes" in message
        assert count(metrics, "RESOURCE_EXHAUSTED", model="m") == 1
        set_max_response_bytes(big.ByteSize())  # exactly the limit is fine
        assert run(handler, FakeContext())[1] is big
    finally:
        set_max_response_bytes(4 << 20)
