"""Misbehaving clients on the real server: slow and cancelling clients must not stall the others, and
a call whose deadline passes while it waits must never run."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator

import grpc
from reliability_support import metric_sum
from seqserve.v1 import sentiment_pb2
from waiting import wait_until

ANALYZE = "/seqserve.v1.Sentiment/Analyze"
# The BiGRU by name: these timings were set on it, and they are about the server, not the model. With the
# 10x slower default (sentiment-minilm-int8) one run of two gave each good client one CANCELLED answer;
# not investigated here (docs/sentiment.md notes it).
MODEL = "sentiment-bigru"
REQUEST = sentiment_pb2.AnalyzeSentimentRequest(texts=["a calm and pleasant evening"], model=MODEL).SerializeToString()
BIG_REQUEST = sentiment_pb2.AnalyzeSentimentRequest(texts=["long and winding " * 40] * 16,
                                                    model=MODEL).SerializeToString()


# Each client its own connection, as separate client processes have: grpc's global subchannel pool would
# otherwise put every channel of this one test process on one HTTP/2 connection, and the cancelling
# clients' stream resets would then count against the good clients' connection (grpc core guards a
# connection against rapid resets), which is not the abuse this test is about.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


async def good_client(target: str, seconds: float) -> tuple[list[float], list[str]]:
    """Calls back to back for `seconds`; latencies of the OK ones, codes of the others."""
    latencies, errors = [], []
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        call = channel.unary_unary(ANALYZE)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            began = time.monotonic()
            try:
                await call(REQUEST, timeout=30)
                latencies.append(time.monotonic() - began)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc.code().name)
    return latencies, errors


async def cancelling_client(target: str, seconds: float, rng: random.Random, cancelling: asyncio.Event) -> int:
    """Starts calls (16 long texts each) and cancels them after 0-20 ms: cancelled in the queue,
    mid-batch or after the answer. Sets `cancelling` at its first cancel. Returns how many it cancelled."""
    cancelled = 0
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        call = channel.unary_unary(ANALYZE)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            pending = call(BIG_REQUEST, timeout=30)
            # The random delay before cancelling IS the abuse: it lands cancels at every stage of a call.
            await asyncio.sleep(rng.uniform(0, 0.02))
            cancelled += pending.cancel()
            cancelling.set()
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                await pending
    return cancelled


async def stalled_request_body(target: str, stalled: asyncio.Event, release: asyncio.Event) -> None:
    """A client that opens a call and sends no request message (headers sent, no body) until `release`
    is set, then cancels it: the server must not hold anything for it but the stream. Sets `stalled`
    once grpc has begun sending the call (it asked for the body)."""
    async def never_finishes() -> AsyncIterator[bytes]:
        stalled.set()
        await release.wait()
        yield REQUEST

    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        call = channel.stream_unary(ANALYZE)(never_finishes(), timeout=60)
        await release.wait()
        call.cancel()


def half_open_connections(port: int, count: int) -> list[socket.socket]:
    """TCP connections that send a fraction of the HTTP/2 preface and then nothing (slowloris)."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"PRI * HTTP/2.0\r\n")
        sockets.append(sock)
    return sockets


def test_slow_and_cancelling_clients_do_not_stall_the_others(start_server, capsys) -> None:
    server = start_server()
    rng = random.Random(7)

    async def scenario() -> tuple[tuple[list[float], list[str]], tuple[list[float], list[str]], int]:
        alone = await good_client(server.target, 2.0)
        slow = half_open_connections(server.port, 50)
        release = asyncio.Event()
        try:
            stalling = [asyncio.Event() for _ in range(20)]
            stalled = [asyncio.create_task(stalled_request_body(server.target, event, release)) for event in stalling]
            cancels_begun = [asyncio.Event() for _ in range(32)]
            cancelling = [asyncio.create_task(cancelling_client(server.target, 5.0, rng, event))
                          for event in cancels_begun]
            # The good clients start once every abuser is at work.
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in stalling + cancels_begun)), 30)
            together = await asyncio.gather(*(good_client(server.target, 4.0) for _ in range(4)))
            cancelled = sum(await asyncio.gather(*cancelling))
            release.set()  # the stalled bodies were held for as long as the good clients ran
            await asyncio.gather(*stalled)
        finally:
            for sock in slow:
                sock.close()
        latencies = [t for lat, _ in together for t in lat]
        errors = [e for _, err in together for e in err]
        return alone, (latencies, errors), cancelled

    (alone, _), (latencies, errors), cancelled = asyncio.run(scenario())
    alone.sort()
    latencies.sort()
    with capsys.disabled():
        print(f"\ngood client alone: {len(alone)} calls, p50 {alone[len(alone) // 2] * 1000:.1f} ms; "
              f"4 good clients beside 50 half-open connections, 20 stalled bodies and 32 cancelling clients "
              f"({cancelled} cancels): {len(latencies)} calls, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
              f"max {latencies[-1] * 1000:.0f} ms, errors {errors}")
    assert errors == []
    assert len(latencies) >= 20  # they kept being served throughout
    assert latencies[-1] < 10  # nobody waited for the abusers (a stall would take the whole 5-6 s)
    assert cancelled > 0
    # Some cancels landed while the call waited in the batch queue: dropped there, never run.
    assert metric_sum(server.metrics_url, "seqserve_batch_rejects_total", reason="cancelled") > 0
    assert server.health() == 1
    assert "Traceback" not in server.log()


def test_calls_whose_deadline_passes_in_the_queue_never_run(start_server) -> None:
    # A long fixed queue delay keeps calls waiting well past their 100 ms deadline.
    server = start_server(extra_args=["--max-queue-delay-ms", "400", "--max-batch-size", "64",
                                      "--queue-delay-policy", "fixed"])

    def batches_run() -> float:
        return metric_sum(server.metrics_url, "seqserve_batch_size_texts_count")

    def inferences_run() -> float:
        return metric_sum(server.metrics_url, "seqserve_stage_duration_seconds_count", stage="inference")

    before_batches, before_inferences = batches_run(), inferences_run()

    async def expired_calls() -> list[str]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            await channel.channel_ready()
            call = channel.unary_unary(ANALYZE)

            async def one() -> str:
                try:
                    await call(REQUEST, timeout=0.1)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name

            return await asyncio.gather(*(one() for _ in range(10)))

    def dropped() -> float:
        return sum(metric_sum(server.metrics_url, "seqserve_batch_rejects_total", reason=reason)
                   for reason in ("deadline", "cancelled"))

    codes = asyncio.run(expired_calls())
    assert codes == ["DEADLINE_EXCEEDED"] * 10
    # The batcher drops them at its next look at the queue, after the 400 ms delay.
    wait_until(lambda: dropped() >= 10, timeout=30, what="the 10 expired calls to be dropped from the queue")
    assert dropped() == 10
    assert batches_run() == before_batches and inferences_run() == before_inferences, "an expired call ran"
    with grpc.insecure_channel(server.target) as channel:  # and the next call with time to spare runs
        channel.unary_unary(ANALYZE)(REQUEST, timeout=30)
    assert batches_run() == before_batches + 1


def test_calls_ending_at_their_deadline_leave_no_traceback_in_the_log(start_server) -> None:
    # Deadlines of 1-30 ms make many calls end in the instant their batch is chosen or answered; nothing
    # may then be written to a call grpc core has already ended (it logged ExecuteBatchError tracebacks).
    server = start_server()
    rng = random.Random(1)
    request = sentiment_pb2.AnalyzeSentimentRequest(texts=["a calm and pleasant evening"] * 4).SerializeToString()

    async def clients() -> list[str]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            call = channel.unary_unary(ANALYZE)
            codes: list[str] = []

            async def client() -> None:
                for _ in range(250):
                    try:
                        await call(request, timeout=rng.uniform(0.001, 0.03))
                        codes.append("OK")
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code().name)

            await asyncio.gather(*(client() for _ in range(16)))
            return codes

    codes = asyncio.run(clients())
    assert set(codes) == {"OK", "DEADLINE_EXCEEDED"}, set(codes)
    server.stop()
    assert server.process.returncode == 0
    assert "Traceback" not in server.log() and "ERROR" not in server.log()
