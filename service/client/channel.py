"""How a client reaches a server: plaintext, TLS, or mutual TLS, and optionally a bearer token.

The token travels as `authorization: Bearer <token>` metadata on every call (service/security/auth.py),
added by a channel interceptor so each client method stays a plain stub call.
"""

from __future__ import annotations

import pathlib
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class Connection:
    """TLS is on when `tls` is set or any certificate file is given; `ca` None means the system roots."""

    tls: bool = False
    ca: pathlib.Path | None = None           # the CA that signed the server's certificate
    cert: pathlib.Path | None = None         # client certificate (mutual TLS), with `key`
    key: pathlib.Path | None = None
    token: str | None = None                 # bearer token sent with every call
    server_name: str | None = None           # the name to check the server certificate against

    @property
    def secure(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(details.method, details.timeout, [*(details.metadata or ()), self._header],
                        details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return continuation(self._with_token(details), request)


class _Details(
    namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    """grpc's call details with our metadata (grpc documents this namedtuple pattern)."""


def open_channel(target: str, connection: Connection | None = None) -> grpc.Channel:
    connection = connection or Connection()
    if (connection.cert is None) != (connection.key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    if connection.secure:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=connection.ca.read_bytes() if connection.ca else None,
            private_key=connection.key.read_bytes() if connection.key else None,
            certificate_chain=connection.cert.read_bytes() if connection.cert else None,
        )
        options = [("grpc.ssl_target_name_override", connection.server_name)] if connection.server_name else []
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target)
    if connection.token:
        channel = grpc.intercept_channel(channel, _BearerToken(connection.token))
    return channel
