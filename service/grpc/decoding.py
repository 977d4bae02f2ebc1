"""Turn an undecodable request body into INVALID_ARGUMENT, like any other bad input.

grpc deserialises a request before any servicer code runs, and a body protobuf cannot parse (for
example a string field holding invalid UTF-8, which a hand-rolled client can send) otherwise reaches
the client as UNKNOWN with a Python exception name. This interceptor moves deserialisation into the
handler, where a DecodeError can be answered properly and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast

import grpc
from google.protobuf.message import DecodeError

from service.metrics.registry import ServingMetrics

log = logging.getLogger(__name__)

# Only methods the server has a handler for are cached (grpc answers UNIMPLEMENTED to others before this).
MAX_CACHED_METHODS = 1024

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class DecodeErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServingMetrics, counted_services: tuple[str, ...]) -> None:
        self._metrics = metrics
        self._counted_services = counted_services
        # method path -> (the handler grpc found, our wrapper of it). Building the wrapper (two closures and a
        # handler tuple) on every call was per-call work with a per-method answer; the identity check rebuilds
        # it when the inner handler differs (the shutdown gate's refusal handler, a re-registered servicer).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        path = handler_call_details.method
        cached = self._wrapped.get(path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, path)
        if len(self._wrapped) < MAX_CACHED_METHODS:  # paths are the server's own methods, but stay bounded
            self._wrapped[path] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, path: str) -> grpc.RpcMethodHandler:
        deserialize = cast(Callable[[bytes], Any], handler.request_deserializer)  # not None: checked by the caller
        service, _, method = path.lstrip("/").rpartition("/")

        async def refuse(exc: DecodeError, start: float, context: grpc.aio.ServicerContext) -> NoReturn:
            message = f"request: not a valid protobuf message ({exc})"
            log.info("refused %s/%s: %s", service, method, message)
            if service in self._counted_services:
                self._metrics.observe_call(
                    service, method, "", grpc.StatusCode.INVALID_ARGUMENT.name, time.perf_counter() - start
                )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        # Deserialised inline (no coroutine of its own per call); only a refusal awaits.
        if handler.unary_unary is not None:
            # An aio server's handlers are coroutine functions; grpc's handler type only knows sync ones.
            unary = cast(Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], handler.unary_unary)

            async def decode_then_handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                start = time.perf_counter()
                try:
                    request = deserialize(raw)
                except DecodeError as exc:
                    await refuse(exc, start, context)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                decode_then_handle, request_deserializer=None, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:  # Translation.TranslateStream
            streaming = cast(Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], handler.unary_stream)

            async def decode_then_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                start = time.perf_counter()
                try:
                    request = deserialize(raw)
                except DecodeError as exc:
                    await refuse(exc, start, context)
                return await streaming(request, context)

            return grpc.unary_stream_rpc_method_handler(
                decode_then_stream, request_deserializer=None, response_serializer=handler.response_serializer
            )
        return handler
