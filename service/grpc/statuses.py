"""Which status and message a client gets for an exception: the one table CallRunner answers by.

A RequestError carries its own status (validation built it); the batcher's refusals map here. Any
exception not in the table is a bug: CallRunner answers INTERNAL with the request id and logs it.
Errors that only mean something in one place (Admin's LookupError is NOT_FOUND there, a bug elsewhere)
stay where they are raised.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from service.batching.errors import BatcherClosedError, DeadlineExpiredError, QueueFullError
from service.grpc.validation import RequestError


class ResponseTooLargeError(Exception):
    """The answer is larger than the server sends (RESOURCE_EXHAUSTED, with what to ask for instead)."""


@dataclass(frozen=True)
class Status:
    code: grpc.StatusCode
    hint: str = ""  # appended to the exception's message: what the client can do about it


STATUSES: dict[type[Exception], Status] = {
    ResponseTooLargeError: Status(grpc.StatusCode.RESOURCE_EXHAUSTED),  # message: the size, the limit, what to do
    QueueFullError: Status(grpc.StatusCode.RESOURCE_EXHAUSTED),    # message: the queue, its limit, retry later
    BatcherClosedError: Status(grpc.StatusCode.UNAVAILABLE, "; retry"),  # unloaded, or the server is stopping
    DeadlineExpiredError: Status(grpc.StatusCode.DEADLINE_EXCEEDED),
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message for `exc`, or None when it is not a refusal (a bug: INTERNAL)."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    for kind, status in STATUSES.items():
        if isinstance(exc, kind):
            return status.code, f"{exc}{status.hint}"
    return None
