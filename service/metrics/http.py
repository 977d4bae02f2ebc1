"""The /metrics HTTP endpoint, on its own port so scraping never competes with gRPC traffic."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


def start_metrics_server(host: str, port: int, registry: CollectorRegistry) -> tuple[WSGIServer, int]:
    """Serve `registry` on host:port in a daemon thread; returns the server and its actual port.

    Port 0 asks the OS for a free port, which is why the bound port is returned.
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
