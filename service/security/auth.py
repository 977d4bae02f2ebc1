"""Bearer-token auth from `authorization: Bearer <token>` metadata, checked before any handler runs.

Admin calls always need the admin token (and are refused when none is configured: an unprotected
load/unload endpoint is worse than none). With an API token configured, every other call needs the
API token or the admin token, except grpc.health.v1 (kubelet probes cannot send tokens).

UNAUTHENTICATED: no token, or one the server does not know. PERMISSION_DENIED: a known token that
may not make this call (the API token on an admin call). Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
ADMIN_SERVICE = "seqserve.v1.Admin"
OPEN_SERVICES = ("grpc.health.v1.Health",)


class TokenFileError(Exception):
    """A token file is unreadable or empty."""


def read_token(path: pathlib.Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc}") from None
    if len(token) < 16:
        raise TokenFileError(f"token file {path}: a token needs at least 16 characters")
    return token


@dataclass(frozen=True)
class Tokens:
    admin: str | None = None
    api: str | None = None


def bearer_token(metadata: tuple[tuple[str, Any], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def decide(tokens: Tokens, method: str, given: str | None) -> tuple[grpc.StatusCode, str] | None:
    """None to let the call through, else the refusal."""
    service = method.lstrip("/").rpartition("/")[0]
    if service in OPEN_SERVICES:
        return None
    if service == ADMIN_SERVICE:
        if tokens.admin is None:
            return grpc.StatusCode.PERMISSION_DENIED, "admin calls are disabled: no admin token is configured"
        if given is None:
            return grpc.StatusCode.UNAUTHENTICATED, "admin calls need an 'authorization: Bearer <token>' header"
        if _same(given, tokens.admin):
            return None
        if _same(given, tokens.api):
            return grpc.StatusCode.PERMISSION_DENIED, "this token may not make admin calls"
        return grpc.StatusCode.UNAUTHENTICATED, "unknown token"
    if tokens.api is None:
        return None
    if given is None:
        return grpc.StatusCode.UNAUTHENTICATED, "calls need an 'authorization: Bearer <token>' header"
    if _same(given, tokens.api) or _same(given, tokens.admin):
        return None
    return grpc.StatusCode.UNAUTHENTICATED, "unknown token"


def _refusal_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator, as streaming handlers must be

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Tokens, on_refusal: Callable[[str, str], None] | None = None) -> None:
        self._tokens = tokens
        self._on_refusal = on_refusal
        # method path -> whether `decide` can refuse it at all (it cannot for an open service, nor for any
        # but Admin without an API token): such calls skip the metadata scan. Only paths with a handler.
        self._checked: dict[str, bool] = {}

    def _needs_check(self, method: str) -> bool:
        checked = self._checked.get(method)
        if checked is None:
            service = method.lstrip("/").rpartition("/")[0]
            checked = service not in OPEN_SERVICES and (service == ADMIN_SERVICE or self._tokens.api is not None)
            if len(self._checked) < 1024:
                self._checked[method] = checked
        return checked

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if not self._needs_check(method):
            return handler
        refusal = decide(self._tokens, method, bearer_token(handler_call_details.invocation_metadata))
        if refusal is None:
            return handler
        code, message = refusal
        log.info("refused %s: %s: %s", method, code.name, message)  # never the token itself
        if self._on_refusal is not None:
            self._on_refusal(method, code.name)
        return _refusal_handler(handler, code, message)
