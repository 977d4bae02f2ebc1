"""One place where every seqserve RPC is timed, counted, logged and turned into a status code.

Servicers hand their work to `CallRunner.run`; it answers a refusal (RequestError, a batcher's refusal)
by the table in statuses.py, anything unexpected with INTERNAL and a generic message (the traceback
goes to the log, under the request id, never to the client), and records the metrics with the code
the client actually receives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from service.grpc.statuses import ResponseTooLargeError, status_of
from service.metrics.registry import ServingMetrics
from service.observability.request_context import request_id_var

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
# A caller's request id is reused only if it is short and plain, since it goes into logs verbatim.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

Response = TypeVar("Response")

# The largest response grpc will send (the server's grpc.max_send_message_length, --max-message-bytes);
# start_server sets it. A bigger one would fail inside grpc core after all the work was done: the client
# got RESOURCE_EXHAUSTED "Sent message larger than max" and the log an ExecuteBatchError traceback.
_max_response_bytes = 4 << 20


def set_max_response_bytes(limit: int) -> None:
    global _max_response_bytes
    _max_response_bytes = limit


def max_response_bytes() -> int:
    return _max_response_bytes


@dataclass
class Call:
    """What a handler knows about its call; `model` labels the metrics once the model is resolved.

    It stays empty until then so a client cannot mint new metric series with made-up model names.
    """

    request_id: str
    model: str = ""
    version: str = ""  # the version that answered, when a model ran


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SAFE_REQUEST_ID.fullmatch(value):
            return value
    # 32 random hex digits, as uuid4().hex gave, without building a UUID object
    # (5.8 vs 1.3 us a call, timeit on this busy machine).
    return os.urandom(16).hex()


class CallRunner:
    def __init__(self, service: str, methods: Sequence[str], metrics: ServingMetrics) -> None:
        self.service = service
        self.metrics = metrics
        # Create the in-flight series up front so a dashboard shows 0, not "no data", before the first call,
        # and keep them: labels() per call was measurable per-call work.
        self._in_flight = {method: metrics.in_flight.labels(service, method) for method in methods}

    async def run(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        handler: Callable[[Call], Awaitable[Response]],
    ) -> Response:
        call = Call(request_id=request_id_of(context))
        # Every log line written while handling this call (in this task) carries its id.
        request_id_var.set(call.request_id)
        in_flight = self._in_flight.get(method) or self.metrics.in_flight.labels(self.service, method)
        in_flight.inc()
        start = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        try:
            response = await handler(call)
            check_response_size(response)
        except asyncio.CancelledError:
            # The client went away or its deadline passed; grpc cancelled this task.
            code = grpc.StatusCode.CANCELLED
            log.info("request %s %s/%s cancelled", call.request_id, self.service, method)
            raise
        except Exception as exc:
            refusal = status_of(exc)
            if refusal is not None:
                code, message = refusal
                log.info("request %s %s/%s refused: %s: %s",
                         call.request_id, self.service, method, code.name, message)
            else:
                code, message = grpc.StatusCode.INTERNAL, f"internal error (request id {call.request_id})"
                log.exception("request %s %s/%s failed", call.request_id, self.service, method)
        finally:
            in_flight.dec()
            ended = code is not grpc.StatusCode.CANCELLED and deadline_has_passed(context, code)
            if ended and code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                log.info("request %s %s/%s: deadline passed before its %s answer was written",
                         call.request_id, self.service, method, code.name)
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            seconds = time.perf_counter() - start
            self.metrics.observe_call(self.service, method, call.model, code.name, seconds, version=call.version)
        if ended:
            # grpc core ended the call with DEADLINE_EXCEEDED at the deadline; a status or response written
            # now fails in core (ExecuteBatchError, logged by grpc with a traceback). Leave without writing.
            raise asyncio.CancelledError
        metadata = ((REQUEST_ID_KEY, call.request_id),)
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message, metadata)
        context.set_trailing_metadata(metadata)
        return response


def check_response_size(response: object) -> None:
    size = response.ByteSize() if hasattr(response, "ByteSize") else 0
    if size > _max_response_bytes:
        raise ResponseTooLargeError(
            f"the response would be {size} bytes, above the server's limit of {_max_response_bytes} bytes "
            "(--max-message-bytes): ask for fewer texts per call, fewer hypotheses (n_best) or no alignment")


def deadline_has_passed(context: grpc.aio.ServicerContext, code: grpc.StatusCode) -> bool:
    """Whether the client's deadline has passed, so that grpc core has already answered DEADLINE_EXCEEDED.

    DEADLINE_EXCEEDED from the batcher means the same: its deadline is the client's (time_remaining at submit),
    and it can fire a hair before core's own clock says so.
    """
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0
