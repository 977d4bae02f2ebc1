"""Per-call work done once (issue #20): the decode-error wrapper per method, metric children per label set."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import grpc
import pytest
from seqserve.v1 import sentiment_pb2

from service.grpc.decoding import DecodeErrorInterceptor
from service.metrics.registry import ServingMetrics
from service.security.auth import AuthInterceptor, Tokens, decide

METHOD = "/seqserve.v1.Sentiment/Analyze"


class Details:
    method: str = METHOD
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str) -> NoReturn:
        self.aborted = (code, message)
        raise Aborted


def handler() -> grpc.RpcMethodHandler:
    async def analyze(request: sentiment_pb2.AnalyzeSentimentRequest, context: Any) -> str:
        return f"analyzed {list(request.texts)}"

    return grpc.unary_unary_rpc_method_handler(
        analyze, request_deserializer=sentiment_pb2.AnalyzeSentimentRequest.FromString)


def test_the_decode_wrapper_is_built_once_per_method_and_rebuilt_for_another_handler() -> None:
    metrics = ServingMetrics()
    interceptor = DecodeErrorInterceptor(metrics, ("seqserve.v1.Sentiment",))
    inner, other = handler(), handler()

    async def intercept(found: grpc.RpcMethodHandler) -> Any:
        async def continuation(_: Any) -> grpc.RpcMethodHandler:
            return found
        return await interceptor.intercept_service(continuation, Details())  # type: ignore[arg-type]

    async def scenario() -> None:
        first, second = await intercept(inner), await intercept(inner)
        assert first is second and first.request_deserializer is None
        assert await intercept(other) is not first  # e.g. the shutdown gate's refusal handler
        request = sentiment_pb2.AnalyzeSentimentRequest(texts=["fine"]).SerializeToString()
        assert await first.unary_unary(request, Context()) == "analyzed ['fine']"
        context = Context()
        with pytest.raises(Aborted):
            await first.unary_unary(b"\x0a\x02\xff\xfe", context)  # texts[0]: invalid UTF-8
        assert context.aborted is not None and context.aborted[0] is grpc.StatusCode.INVALID_ARGUMENT
        assert context.aborted[1].startswith("request: not a valid protobuf message")

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value("seqserve_requests_total", {
        "service": "seqserve.v1.Sentiment", "method": "Analyze", "model": "", "version": "",
        "code": "INVALID_ARGUMENT"}) == 1


def test_cached_metric_children_keep_counting_each_label_set_apart() -> None:
    metrics = ServingMetrics()
    for _ in range(3):
        metrics.observe_call("s", "m", "model", "OK", 0.002, version="1")
    metrics.observe_call("s", "m", "model", "NOT_FOUND", 0.001)
    sample = metrics.registry.get_sample_value
    assert sample("seqserve_requests_total",
                  {"service": "s", "method": "m", "model": "model", "version": "1", "code": "OK"}) == 3
    assert sample("seqserve_requests_total",
                  {"service": "s", "method": "m", "model": "model", "version": "", "code": "NOT_FOUND"}) == 1
    assert sample("seqserve_request_duration_seconds_count",
                  {"service": "s", "method": "m", "model": "model", "version": "1"}) == 3
    assert sample("seqserve_request_duration_seconds_sum",
                  {"service": "s", "method": "m", "model": "model", "version": "1"}) == pytest.approx(0.006)


@pytest.mark.parametrize("tokens", [Tokens(), Tokens(api="a" * 16), Tokens(admin="b" * 16),
                                    Tokens(admin="b" * 16, api="a" * 16)])
def test_auth_lets_through_exactly_what_decide_lets_through(tokens: Tokens) -> None:
    """The interceptor skips the token check where decide cannot refuse; it must still agree with decide."""
    interceptor = AuthInterceptor(tokens)
    inner = handler()

    async def continuation(_: Any) -> grpc.RpcMethodHandler:
        return inner

    async def passes(method: str, given: str | None) -> bool:
        details = Details()
        details.method = method
        details.invocation_metadata = () if given is None else (("authorization", f"Bearer {given}"),)
        return await interceptor.intercept_service(continuation, details) is inner  # type: ignore[arg-type]

    for method in ("/grpc.health.v1.Health/Check", "/seqserve.v1.Admin/LoadModel", METHOD):
        for given in (None, "a" * 16, "b" * 16, "c" * 16):
            for _ in range(2):  # the second call answers from the per-method cache
                assert asyncio.run(passes(method, given)) == (decide(tokens, method, given) is None), (method, given)
