"""Whether the server takes traffic: false until every model is loaded and warmed, and again from the
moment a stop signal arrives (the drain). grpc.health.v1 and V2 ServerReady both report it."""

from __future__ import annotations


class Readiness:
    def __init__(self) -> None:
        self.ready = False
