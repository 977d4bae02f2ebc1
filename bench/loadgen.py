"""The load client: grpc.aio, a bounded number of calls at a bounded concurrency, every status checked.

A job names pre-serialised requests (method path + bytes), so one client drives any gRPC server
(seqserve's task APIs, its V2 endpoint, MLServer) identically, and the cost of building messages is
paid once, outside the timed loop. Run as `python -m bench.loadgen`, it reads one JSON job per line
on stdin and answers one JSON result per line on stdout, so it lives in a process of its own and the
orchestrator's work (or the in-process baseline) never competes for its GIL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import grpc


@dataclass(frozen=True)
class Call:
    method: str      # "/seqserve.v1.Sentiment/Analyze"
    request: bytes   # the serialised request message


@dataclass(frozen=True)
class LoadJob:
    target: str
    calls: Sequence[Call]         # cycled through, in order
    concurrency: int
    max_calls: int                # bound on the number of calls...
    max_seconds: float            # ...and on the time (whichever ends first)
    timeout: float = 30.0         # per-call deadline
    keep_responses: int = 1       # responses returned (for a content check by the caller)
    channels: int = 1             # HTTP/2 connections the calls are spread over


@dataclass
class LoadResult:
    ok: int = 0
    codes: dict[str, int] = field(default_factory=dict)   # every non-OK status, by name
    latencies_ms: list[float] = field(default_factory=list)  # of the OK calls
    wall_seconds: float = 0.0
    client_cpu_seconds: float = 0.0   # this client process's CPU time during the run
    responses: list[bytes] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.codes.values())

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_seconds if self.wall_seconds > 0 else 0.0


async def run_load(job: LoadJob) -> LoadResult:
    # A local subchannel pool per channel: grpc otherwise shares one connection among channels of equal
    # target and options, and every call would reach one worker of a --workers N server.
    channels = [grpc.aio.insecure_channel(job.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, job.channels))]
    try:
        # Raw bytes in and out: no (de)serialisation in the timed loop, the same for every server.
        stubs: dict[tuple[int, str], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {
            (i, method): channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            for i, channel in enumerate(channels)
            for method in {c.method for c in job.calls}
        }
        result = LoadResult()
        codes: Counter[str] = Counter()
        next_index = 0
        start = time.perf_counter()
        cpu_start = time.process_time()
        stop_at = start + job.max_seconds

        async def worker(worker_id: int) -> None:
            nonlocal next_index
            channel_id = worker_id % len(channels)
            while next_index < job.max_calls and time.perf_counter() < stop_at:
                call = job.calls[next_index % len(job.calls)]
                next_index += 1
                began = time.perf_counter()
                try:
                    response = await stubs[(channel_id, call.method)](call.request, timeout=job.timeout)
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    continue
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
                result.ok += 1
                if len(result.responses) < job.keep_responses:
                    result.responses.append(response)

        await asyncio.gather(*(worker(i) for i in range(job.concurrency)))
        result.wall_seconds = time.perf_counter() - start
        result.client_cpu_seconds = time.process_time() - cpu_start
        result.codes = dict(codes)
        return result
    finally:
        for channel in channels:
            await channel.close()


def job_to_json(job: LoadJob) -> str:
    data = asdict(job)
    data["calls"] = [{"method": c.method, "request": base64.b64encode(c.request).decode()} for c in job.calls]
    return json.dumps(data)


def job_from_json(text: str) -> LoadJob:
    data = json.loads(text)
    calls = [Call(c["method"], base64.b64decode(c["request"])) for c in data.pop("calls")]
    return LoadJob(calls=calls, **data)


def result_to_json(result: LoadResult) -> str:
    data = asdict(result)
    data["responses"] = [base64.b64encode(r).decode() for r in result.responses]
    return json.dumps(data)


def result_from_json(text: str) -> LoadResult:
    data = json.loads(text)
    data["responses"] = [base64.b64decode(r) for r in data["responses"]]
    return LoadResult(**data)


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            result = asyncio.run(run_load(job_from_json(line)))
            sys.stdout.write(result_to_json(result) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
