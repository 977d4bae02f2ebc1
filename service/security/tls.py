"""Server credentials: TLS with the configured certificate, mutual TLS when a client CA is set."""

from __future__ import annotations

import pathlib
import ssl

import grpc


class TlsConfigError(Exception):
    """A certificate or key file could not be read, or the two do not belong together."""


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key; grpc cannot use one anyway.
    raise TlsConfigError("the key is encrypted; grpc needs an unencrypted PEM key")


def check_pair(cert: pathlib.Path, key: pathlib.Path) -> None:
    """Fail with both file names if the key is not the certificate's: grpc only reports it when it binds the
    port, as "Failed to bind to address", which names neither file nor the reason."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
    except TlsConfigError as exc:
        raise TlsConfigError(f"TLS key {key}: {exc}") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsConfigError(f"TLS key {key} does not match TLS certificate {cert}") from None
        raise TlsConfigError(f"TLS certificate {cert} and TLS key {key}: not a usable PEM pair ({exc})") from None


def server_credentials(
    cert: pathlib.Path, key: pathlib.Path, client_ca: pathlib.Path | None = None
) -> grpc.ServerCredentials:
    """With client_ca, a client without a certificate signed by it fails the TLS handshake."""
    root = _read(client_ca, "client CA") if client_ca is not None else None
    key_pem, cert_pem = _read(key, "TLS key"), _read(cert, "TLS certificate")
    check_pair(cert, key)
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=root,
        require_client_auth=root is not None,
    )
