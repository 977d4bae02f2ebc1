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
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from service.metrics.registry import ServingMetrics

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class DecodeErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServingMetrics, counted_services: tuple[str, ...]) -> None:
        self._metrics = metrics
        self._counted_services = counted_services

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        deserialize = handler.request_deserializer
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")

        async def decode(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                return deserialize(raw)
            except DecodeError as exc:
                message = f"request: not a valid protobuf message ({exc})"
                log.info("refused %s/%s: %s", service, method, message)
                if service in self._counted_services:
                    self._metrics.observe_call(
                        service, method, "", grpc.StatusCode.INVALID_ARGUMENT.name, time.perf_counter() - start
                    )
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        if handler.unary_unary is not None:
            # An aio server's handlers are coroutine functions; grpc's handler type only knows sync ones.
            unary = cast(Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], handler.unary_unary)

            async def decode_then_handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await unary(await decode(raw, context), context)

            return grpc.unary_unary_rpc_method_handler(
                decode_then_handle, request_deserializer=None, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:  # Translation.TranslateStream
            streaming = cast(Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], handler.unary_stream)

            async def decode_then_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await streaming(await decode(raw, context), context)

            return grpc.unary_stream_rpc_method_handler(
                decode_then_stream, request_deserializer=None, response_serializer=handler.response_serializer
            )
        return handler
