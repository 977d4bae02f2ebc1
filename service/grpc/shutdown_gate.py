"""The stop sequence's gate: once closed, seqserve itself refuses new calls UNAVAILABLE while grpc keeps
running, and grpc is stopped only when calls have stopped arriving.

Why: grpc core's stop (grpc.aio server.stop) answers CANCELLED - not UNAVAILABLE - to every call that reaches
it from that instant on, or that is still waiting in core for the Python server to pick it up (under 32
clients calling back to back, calls sent up to 64 ms before the signal: 28 of 7,800 calls in two rounds),
and a call matched in the very instant of the stop can hang until the grace period ends.

A refused call is held (not run) until grpc's stop has begun and only then answered UNAVAILABLE: a client
calling back to back waits for that answer instead of sending call after call, so calls stop arriving and
grpc stops with nothing left in core to cancel; the answer reaches the client after grpc's GOAWAY, so its
next call goes to a new connection, which the closed port refuses (UNAVAILABLE, never run). A call refused
here was never run either, so a client may retry it on another replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.grpc.calls import deadline_has_passed

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

# Longer than a call waits in grpc core for the Python server to take it (up to 64 ms measured under load,
# with the event loop busy); short enough that a stop with no traffic still takes well under a second.
QUIET_SECONDS = 0.25
# Clients that keep opening connections never fall quiet: the gate gives up waiting after this, leaving the
# rest of the grace period to the calls in flight.
QUIET_LIMIT_SECONDS = 2.0
# Refused calls held at once; beyond it a call is answered at once (a hold costs a coroutine, not a model run).
MAX_HELD_CALLS = 10_000
REFUSAL = "server is shutting down; retry on another replica"


class ShutdownGate(grpc.aio.ServerInterceptor):
    def __init__(self, always_open: tuple[str, ...], on_refusal: Callable[[str, str], None]) -> None:
        """always_open: services still answered while closed (health, so probes read NOT_SERVING);
        on_refusal(method, code name) counts a refused call."""
        self._always_open = always_open
        self._on_refusal = on_refusal
        self._closed = False
        self._last_arrival = time.monotonic()
        self._released = asyncio.Event()
        self._held = 0

    @property
    def held_calls(self) -> int:
        return self._held

    def close(self) -> None:
        """From now on a new call (other than always_open's) is held, then refused UNAVAILABLE."""
        self._closed = True

    def release(self) -> None:
        """Answer the held calls UNAVAILABLE, and later ones at once: call once grpc's stop has begun."""
        self._released.set()

    async def wait_until_quiet(self, limit: float, quiet: float = QUIET_SECONDS) -> float:
        """Until no call has arrived for `quiet` seconds, or `limit` seconds have passed; returns the wait."""
        start = time.monotonic()
        while True:
            now = time.monotonic()
            silent_until = self._last_arrival + quiet
            if now >= silent_until or now - start >= limit:
                return now - start
            await asyncio.sleep(min(silent_until, start + limit) - now)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        self._last_arrival = time.monotonic()
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.lstrip("/").rpartition("/")[0]
        if not self._closed or handler is None or service in self._always_open:
            return handler
        self._on_refusal(handler_call_details.method, grpc.StatusCode.UNAVAILABLE.name)
        return _refusing_handler(handler, self._refuse)

    async def _refuse(self, _request: Any, context: grpc.aio.ServicerContext) -> None:
        if not self._released.is_set() and self._held < MAX_HELD_CALLS:
            self._held += 1
            try:
                await self._released.wait()  # the client's deadline still applies: grpc cancels this wait
            finally:
                self._held -= 1
        if deadline_has_passed(context, grpc.StatusCode.UNAVAILABLE):
            raise asyncio.CancelledError  # grpc core has answered DEADLINE_EXCEEDED; nothing may be written
        await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSAL)


def _refusing_handler(
    like: grpc.RpcMethodHandler, refuse: Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `like` running `refuse` without reading the request."""
    if like.request_streaming and like.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if like.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if like.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)
