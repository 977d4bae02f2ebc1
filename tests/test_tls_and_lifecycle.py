"""TLS, mutual TLS and API tokens on the real server; the SIGTERM drain under load; JSON logs."""

from __future__ import annotations

import datetime
import ipaddress
import json
import pathlib
import signal
import threading
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqserve.v1 import sentiment_pb2, sentiment_pb2_grpc
from waiting import wait_until

API_TOKEN = "api-token-0123456789abcdef"
REQUEST = sentiment_pb2.AnalyzeSentimentRequest(texts=["what a lovely day"])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey]
                 | None = None, ca: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """A throw-away CA, a server certificate for 127.0.0.1, and a client certificate; plus a stranger CA."""
    root = tmp_path_factory.mktemp("pki")
    files: dict[str, pathlib.Path] = {}
    for ca_name in ("ca", "other-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate(ca_name, ca_key, ca=True)
        files[ca_name] = root / f"{ca_name}.pem"
        files[ca_name].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        for leaf in ("server", "client"):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(f"{leaf}.{ca_name}", key, issuer=(ca_cert.subject, ca_key))
            files[f"{leaf}-{ca_name}-cert"] = root / f"{leaf}-{ca_name}.pem"
            files[f"{leaf}-{ca_name}-cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            files[f"{leaf}-{ca_name}-key"] = root / f"{leaf}-{ca_name}.key"
            files[f"{leaf}-{ca_name}-key"].write_bytes(_pem(key))
    return files


def secure_channel(server, pki, client_ca: str | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].read_bytes(),
        private_key=pki[f"client-{client_ca}-key"].read_bytes() if client_ca else None,
        certificate_chain=pki[f"client-{client_ca}-cert"].read_bytes() if client_ca else None,
    )
    return grpc.secure_channel(server.target, credentials)


def wait_serving(server, pki) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        with secure_channel(server, pki, "ca") as channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    raise AssertionError(server.log())


def test_tls_with_an_api_token(start_server, pki, tmp_path: pathlib.Path) -> None:
    (tmp_path / "api.token").write_text(API_TOKEN)
    server = start_server(extra_args=[
        "--tls-cert", str(pki["server-ca-cert"]), "--tls-key", str(pki["server-ca-key"]),
        "--api-token-file", str(tmp_path / "api.token"),
    ], wait=False)
    wait_serving(server, pki)
    with secure_channel(server, pki) as channel:
        analyze = sentiment_pb2_grpc.SentimentStub(channel).Analyze
        assert len(analyze(REQUEST, metadata=(("authorization", f"Bearer {API_TOKEN}"),), timeout=10).results) == 1
        for metadata in [(), (("authorization", "Bearer wrong-token-wrong-token"),), (("authorization", API_TOKEN),)]:
            with pytest.raises(grpc.RpcError) as error:
                analyze(REQUEST, metadata=metadata, timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Plaintext to a TLS port, or a server certificate from a CA the client does not trust: no call.
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as error:
        sentiment_pb2_grpc.SentimentStub(channel).Analyze(REQUEST, timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = grpc.ssl_channel_credentials(root_certificates=pki["other-ca"].read_bytes())
    with grpc.secure_channel(server.target, stranger) as channel, pytest.raises(grpc.RpcError) as error:
        sentiment_pb2_grpc.SentimentStub(channel).Analyze(REQUEST, timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_configured_ca(start_server, pki) -> None:
    server = start_server(extra_args=[
        "--tls-cert", str(pki["server-ca-cert"]), "--tls-key", str(pki["server-ca-key"]),
        "--tls-client-ca", str(pki["ca"]),
    ], wait=False)
    wait_serving(server, pki)
    with secure_channel(server, pki, "ca") as channel:
        assert len(sentiment_pb2_grpc.SentimentStub(channel).Analyze(REQUEST, timeout=10).results) == 1
    for client_ca in (None, "other-ca"):
        with secure_channel(server, pki, client_ca) as channel, pytest.raises(grpc.RpcError) as error:
            sentiment_pb2_grpc.SentimentStub(channel).Analyze(REQUEST, timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "mutual TLS" in server.log()


def test_the_cli_speaks_mutual_tls_with_a_token(start_server, pki, tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from service.client.cli import main

    (tmp_path / "api.token").write_text(API_TOKEN + "\n")
    server = start_server(extra_args=[
        "--tls-cert", str(pki["server-ca-cert"]), "--tls-key", str(pki["server-ca-key"]),
        "--tls-client-ca", str(pki["ca"]), "--api-token-file", str(tmp_path / "api.token"),
    ], wait=False)
    wait_serving(server, pki)
    secure = ["--target", server.target, "--tls-ca", str(pki["ca"]),
              "--tls-cert", str(pki["client-ca-cert"]), "--tls-key", str(pki["client-ca-key"])]
    assert main([*secure, "--token-file", str(tmp_path / "api.token"), "sentiment", "what a lovely day"]) == 0
    assert "what a lovely day" in capsys.readouterr().out
    # The same connection without the token: refused by auth, reported as such.
    assert main([*secure, "sentiment", "what a lovely day"]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    # Half a client identity is a usage error, before any connection.
    assert main([*secure[:4], "--tls-cert", str(pki["client-ca-cert"]), "sentiment", "x"]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_sigterm_under_load_drains_then_stops_without_losing_an_accepted_call(start_server) -> None:
    server = start_server(extra_args=["--drain-seconds", "1.5", "--grace-seconds", "20", "--log-format", "json"])
    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    answered = [threading.Event() for _ in range(3)]

    def client(answered: threading.Event) -> None:
        with grpc.insecure_channel(server.target) as channel:
            analyze = sentiment_pb2_grpc.SentimentStub(channel).Analyze
            for _ in range(3000):
                if stop.is_set():
                    return
                try:
                    analyze(REQUEST, metadata=(("x-request-id", "load-1"),), timeout=30)
                    outcomes.append((time.monotonic(), "OK"))
                    answered.set()
                except grpc.RpcError as exc:
                    outcomes.append((time.monotonic(), exc.code().name))
                    return  # the server has stopped listening

    threads = [threading.Thread(target=client, args=(event,)) for event in answered]
    for thread in threads:
        thread.start()
    for event in answered:  # the signal comes once every client is being answered
        assert event.wait(30), "a client got no answer before the signal"
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # At once, while still answering: well inside the 1.5 s drain.
    wait_until(lambda: server.health() == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=1.0,
               what="health NOT_SERVING after SIGTERM, during the drain")
    assert server.wait_for_exit(timeout=60) == 0
    stop.set()
    for thread in threads:
        thread.join(30)

    ok_during_drain = [t for t, code in outcomes if code == "OK" and signalled + 0.2 < t < signalled + 1.4]
    assert ok_during_drain, "calls must still succeed during the drain"
    refused = [(t, code) for t, code in outcomes if code != "OK"]
    # After the drain a new call is refused UNAVAILABLE, by seqserve and then by the closed port, never
    # accepted; nothing fails before the drain ends. (grpc core's own stop answered CANCELLED to calls reaching
    # it in the instant of the stop, about 1 run in 3 here, until the stop sequence held them; issue 16.)
    assert all(code == "UNAVAILABLE" and t > signalled + 1.4 for t, code in refused), refused
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("draining for 1.5 s" in line["message"] for line in lines)
    assert "Traceback" not in server.log()


def test_json_logs_carry_the_request_id(start_server) -> None:
    server = start_server(extra_args=["--log-format", "json"])
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as error:
        sentiment_pb2_grpc.SentimentStub(channel).Analyze(
            sentiment_pb2.AnalyzeSentimentRequest(texts=[]), metadata=(("x-request-id", "req-77"),), timeout=10
        )
    assert dict(error.value.trailing_metadata() or ()).get("x-request-id") == "req-77"

    def refusal_lines() -> list[dict]:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in lines if "refused" in line["message"] and line.get("request_id") == "req-77"]

    wait_until(refusal_lines, timeout=10, what="the refusal's log line with request id req-77")
    assert refusal_lines()[0]["level"] == "INFO"


def test_a_certificate_and_a_key_that_do_not_match_exit_1_naming_both_files(start_server, pki) -> None:
    cert, key = pki["server-ca-cert"], pki["client-ca-key"]
    server = start_server(extra_args=["--tls-cert", str(cert), "--tls-key", str(key)], wait=False)
    assert server.wait_for_exit(timeout=90) == 1
    critical = [line for line in server.log().splitlines() if "CRITICAL" in line]
    assert len(critical) == 1, server.log()
    assert f"TLS key {key} does not match TLS certificate {cert}" in critical[0]
    assert "Failed to bind" not in server.log() and "Traceback" not in server.log()
