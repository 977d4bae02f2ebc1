"""Server credentials: TLS with the configured certificate, mutual TLS when a client CA is set."""

from __future__ import annotations

import pathlib

import grpc


class TlsConfigError(Exception):
    """A certificate or key file could not be read."""


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None


def server_credentials(
    cert: pathlib.Path, key: pathlib.Path, client_ca: pathlib.Path | None = None
) -> grpc.ServerCredentials:
    """With client_ca, a client without a certificate signed by it fails the TLS handshake."""
    root = _read(client_ca, "client CA") if client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(_read(key, "TLS key"), _read(cert, "TLS certificate"))],
        root_certificates=root,
        require_client_auth=root is not None,
    )
