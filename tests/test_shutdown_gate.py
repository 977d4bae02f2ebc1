"""The stop sequence's gate: open, it changes nothing; closed, it holds new calls unrun and answers them
UNAVAILABLE only once released; health stays answered; it reports quiet once calls stop arriving."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from service.grpc.shutdown_gate import REFUSAL, ShutdownGate


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return 30.0

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted


@dataclass
class Details:
    method: str


async def served(_request: Any, _context: Any) -> str:
    return "ran"


async def continuation(_details: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(served)


def test_a_closed_gate_holds_new_calls_until_released_then_refuses_them_unavailable() -> None:
    refusals: list[tuple[str, str]] = []

    async def scenario() -> tuple[FakeContext, bool, Any]:
        gate = ShutdownGate(("grpc.health.v1.Health",), lambda method, code: refusals.append((method, code)))
        open_handler = await gate.intercept_service(continuation, Details("/seqserve.v1.Sentiment/Analyze"))
        assert await open_handler.unary_unary(b"", FakeContext()) == "ran"
        gate.close()
        health = await gate.intercept_service(continuation, Details("/grpc.health.v1.Health/Check"))
        assert await health.unary_unary(b"", FakeContext()) == "ran"
        refused = await gate.intercept_service(continuation, Details("/seqserve.v1.Sentiment/Analyze"))
        context = FakeContext()
        held = asyncio.create_task(refused.unary_unary(b"", context))
        while gate.held_calls == 0:  # the handler has started and is holding the call
            await asyncio.sleep(0)
        still_held = not held.done()
        gate.release()
        with pytest.raises(Aborted):
            await held
        return context, still_held, gate

    context, still_held, gate = asyncio.run(scenario())
    assert still_held and gate.held_calls == 0
    assert context.aborted == (grpc.StatusCode.UNAVAILABLE, REFUSAL)
    assert refusals == [("/seqserve.v1.Sentiment/Analyze", "UNAVAILABLE")]


def test_the_gate_waits_for_quiet_but_no_longer_than_its_limit() -> None:
    async def scenario() -> tuple[float, float]:
        gate = ShutdownGate((), lambda method, code: None)
        gate.close()

        async def keep_calling() -> None:
            while True:
                await gate.intercept_service(continuation, Details("/seqserve.v1.Sentiment/Analyze"))
                await asyncio.sleep(0.01)

        caller = asyncio.create_task(keep_calling())
        busy = await gate.wait_until_quiet(limit=0.3, quiet=0.1)
        caller.cancel()
        quiet = await gate.wait_until_quiet(limit=5, quiet=0.1)
        return busy, quiet

    busy, quiet = asyncio.run(scenario())
    assert 0.3 <= busy < 1.0  # calls kept arriving: gave up at the limit
    assert 0.05 <= quiet < 1.0  # the last call was under 0.1 s before: waited out the rest of the quiet time
