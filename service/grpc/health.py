"""grpc.health.v1.Health: Check, Watch and List over one table of statuses, and a stop that ends Watch streams.

grpc's own aio HealthServicer leaves List unimplemented (reflection lists it; it answered UNIMPLEMENTED and
grpc logged a traceback) and keeps every Watch stream open until the client leaves, so one open stream held
SIGTERM for the whole grace period (10.4 s instead of 0.4 s). Here a stop sends NOT_SERVING to every watcher
and then ends its stream with OK, so the server's stop never waits for them.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The enum values (ints at run time); the enum wrapper itself is not a type.
ServingStatus: TypeAlias = "health_pb2.HealthCheckResponse.ServingStatus.ValueType"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, names: tuple[str, ...], status: ServingStatus = NOT_SERVING) -> None:
        # A fixed set of names: a client cannot grow the table (an unknown name is NOT_FOUND / SERVICE_UNKNOWN).
        self._statuses: dict[str, ServingStatus] = dict.fromkeys(names, status)
        self._changed = asyncio.Condition()
        self._stopping = False   # NOT_SERVING for good: set() no longer changes anything
        self._watches_ended = False

    def set(self, status: ServingStatus) -> None:
        """Every name to `status` (ignored once stopping); watchers hear it at once."""
        if self._stopping:
            return
        self._statuses = dict.fromkeys(self._statuses, status)
        self._notify()

    def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every name, for good; Watch streams stay open and report it."""
        self.set(NOT_SERVING)
        self._stopping = True

    def end_watches(self) -> None:
        """End every Watch stream (after its NOT_SERVING), and answer later ones with one message."""
        self.enter_graceful_shutdown()
        self._watches_ended = True
        self._notify()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        # Called from the event loop's own code (start-up, the stop sequence): schedule the wake-up.
        asyncio.get_running_loop().create_task(wake())

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"service: unknown name {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(statuses={
            name: health_pb2.HealthCheckResponse(status=status) for name, status in self._statuses.items()
        })

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        sent = None
        while True:
            async with self._changed:
                status = self._statuses.get(request.service, SERVICE_UNKNOWN)
                if status == sent and not self._watches_ended:
                    await self._changed.wait()
                    continue
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if self._watches_ended:
                return
