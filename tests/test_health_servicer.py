"""The health servicer's stop: Watch streams hear NOT_SERVING and then end; statuses cannot come back."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from service.grpc.health import HealthServicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class WatchContext:
    """Records what Watch writes; `written` is set at each write so the test can wait for it."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.written = asyncio.Event()

    async def write(self, response: health_pb2.HealthCheckResponse) -> None:
        self.statuses.append(response.status)
        self.written.set()


async def next_write(context: WatchContext) -> None:
    await asyncio.wait_for(context.written.wait(), 5)
    context.written.clear()


def test_watch_streams_hear_not_serving_then_end_and_later_ones_end_at_once() -> None:
    async def scenario() -> tuple[list[int], list[int], list[int], int]:
        health = HealthServicer(("", "seqserve.v1.Sentiment"))
        health.set(SERVING)
        watching, unknown = WatchContext(), WatchContext()
        stream = asyncio.create_task(health.Watch(health_pb2.HealthCheckRequest(service=""), watching))
        unknown_stream = asyncio.create_task(health.Watch(health_pb2.HealthCheckRequest(service="nope"), unknown))
        await next_write(watching)
        await next_write(unknown)
        health.enter_graceful_shutdown()
        await next_write(watching)
        assert not stream.done()  # during the drain the stream stays open
        health.end_watches()
        await asyncio.wait_for(asyncio.gather(stream, unknown_stream), 5)
        health.set(SERVING)  # ignored once stopping
        late = WatchContext()
        await asyncio.wait_for(health.Watch(health_pb2.HealthCheckRequest(service=""), late), 5)
        listed = await health.List(health_pb2.HealthListRequest(), None)  # type: ignore[arg-type]
        return watching.statuses, unknown.statuses, late.statuses, len(listed.statuses)

    watched, unknown, late, listed = asyncio.run(scenario())
    assert watched == [SERVING, NOT_SERVING]
    assert unknown == [SERVICE_UNKNOWN]
    assert late == [NOT_SERVING]
    assert listed == 2
