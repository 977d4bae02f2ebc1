"""Mixed endpoints at 64 concurrent clients for a fixed time: no failed call, no memory growth."""

from __future__ import annotations

import asyncio
import dataclasses

from reliability_support import mixed_calls, rss_bytes

from bench.loadgen import LoadJob, run_load

CLIENTS = 64
WARM_UP_SECONDS = 3.0
LOAD_SECONDS = 8.0
MAX_GROWTH = 0.10


def test_mixed_load_at_64_clients_fails_no_call_and_does_not_grow_memory(start_server, capsys) -> None:
    server = start_server()
    job = LoadJob(target=server.target, calls=mixed_calls(), concurrency=CLIENTS, max_calls=200_000,
                  max_seconds=WARM_UP_SECONDS, timeout=60, keep_responses=0, channels=4)
    # Warm-up: onnxruntime's arena, grpc's buffers and the metric series reach their working size.
    warm = asyncio.run(run_load(job))
    after_warm_up = rss_bytes(server.process.pid)
    loaded = asyncio.run(run_load(dataclasses.replace(job, max_seconds=LOAD_SECONDS)))
    after_load = rss_bytes(server.process.pid)

    growth = (after_load - after_warm_up) / after_warm_up
    with capsys.disabled():  # the figures docs/reliability.md reports
        print(f"\nmixed load: {loaded.ok} calls in {loaded.wall_seconds:.1f} s ({loaded.throughput:.0f}/s), "
              f"failed {loaded.codes}; RSS {after_warm_up / 2**20:.1f} -> {after_load / 2**20:.1f} MiB "
              f"({growth:+.1%})")
    assert warm.codes == {} and loaded.codes == {}, (warm.codes, loaded.codes)
    assert loaded.ok > CLIENTS  # every client got answers, not just a few
    assert growth < MAX_GROWTH
    assert server.health() == 1  # SERVING
    assert "Traceback" not in server.log()
