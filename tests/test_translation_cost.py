"""Issue #16 item 3: translation decoding stops when its call is cancelled, decodes in bounded chunks
(with the same outputs as unchunked), lets queued calls run between chunks, and refuses a call over
the per-call cost budget. Pipeline tests run on the tiny random Transformer (and the committed one
when present); the batcher tests use stand-in pipelines; the budget goes through the real server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from exported_models import EXPORTED
from seqserve.v1 import translation_pb2, translation_pb2_grpc

from service.batching.batcher import DynamicBatcher
from service.batching.errors import DeadlineExpiredError
from service.metrics.registry import ServingMetrics
from service.model.model_config import BatchConfig
from service.model.timing import StageTimings
from service.pipelines.seq2seq_runtime import DecoderState, StepRunner
from service.pipelines.translation import DecodeOptions, Translation, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version

TEXTS = ["Jesus wept.", "In the beginning, God created the heavens.", "Dieu dit: Que la lumière soit!",
         "And the earth was without form, and void.", "God is love."]
STEPS = 40  # far more than a stop needs: a decode that ran to the end takes this many steps


class CountingRunner:
    """Wraps a StepRunner: counts encoder runs and the rows of every step, and can fire a callback
    (e.g. a call's cancellation) right after a given step: the test's synchronisation point."""

    def __init__(self, runner: StepRunner) -> None:
        self._runner = runner
        self.bos_id, self.eos_id, self.pad_id = runner.bos_id, runner.eos_id, runner.pad_id
        self.encodes = 0
        self.step_rows: list[int] = []
        self.after_step: dict[int, Callable[[], None]] = {}

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> DecoderState:
        self.encodes += 1
        return self._runner.encode(src_ids, src_mask)

    def step(self, tokens: np.ndarray, state: DecoderState) -> tuple[np.ndarray, np.ndarray, DecoderState]:
        output = self._runner.step(tokens, state)
        self.step_rows.append(len(tokens))
        action = self.after_step.get(len(self.step_rows))
        if action is not None:
            action()
        return output


@pytest.fixture(scope="module")
def model(tiny_translation_models):
    return load_version(tiny_translation_models / "transformer" / "1")


def pipeline_of(model, chunk_bytes: int | None = None) -> tuple[TranslationPipeline, CountingRunner]:
    pipeline = TranslationPipeline(model) if chunk_bytes is None else TranslationPipeline(model, chunk_bytes)
    counting = CountingRunner(pipeline.runner)
    pipeline.runner = counting  # type: ignore[assignment]
    return pipeline, counting


def same(a: Translation | None, b: Translation | None) -> bool:
    """Bit for bit: tokens, text, scores and alignment weights."""
    assert a is not None and b is not None
    if [(h.tokens, h.text, h.score, h.log_prob) for h in a.hypotheses] != \
            [(h.tokens, h.text, h.score, h.log_prob) for h in b.hypotheses]:
        return False
    if (a.alignment is None) != (b.alignment is None):
        return False
    return a.alignment is None or np.array_equal(a.alignment.weights, b.alignment.weights)


OPTIONS = [DecodeOptions(beam_size=1, max_output_tokens=STEPS),
           DecodeOptions(beam_size=3, n_best=2, max_output_tokens=STEPS, alignment=True)]


@pytest.mark.parametrize("options", OPTIONS, ids=["greedy", "beam3"])
def test_a_cancelled_call_stops_within_a_step_and_its_batch_mates_get_their_full_results(model, options) -> None:
    requests = [TranslationRequest(t, options) for t in TEXTS[:3]]
    reference, _ = pipeline_of(model)
    expected = reference(requests)
    pipeline, runner = pipeline_of(model)
    cancelled = threading.Event()  # call A owns texts 0 and 2, call B text 1
    runner.after_step[3] = cancelled.set
    stops = [cancelled.is_set, lambda: False, cancelled.is_set]
    results = pipeline(requests, stops=stops)
    assert results[0] is None and results[2] is None
    assert same(results[1], expected[1])
    beams = options.beam_size
    # Steps 1-3 ran all three texts' rows (beam search may already have dropped a finished one);
    # from step 4 on only call B's rows run, and B alone decides how long decoding goes on.
    assert runner.step_rows[3:] and max(runner.step_rows[3:]) <= beams


@pytest.mark.parametrize("options", OPTIONS, ids=["greedy", "beam3"])
def test_a_call_cancelled_mid_decode_does_not_run_to_the_end(model, options) -> None:
    """Prove the loop stopped: the uncancelled decode takes STEPS steps (a random tiny model rarely
    emits [EOS]); cancelled after step 2, the decode runs no step after it."""
    requests = [TranslationRequest(t, options) for t in TEXTS]
    reference, full = pipeline_of(model)
    reference(requests)
    assert len(full.step_rows) > 10
    pipeline, runner = pipeline_of(model)
    cancelled = threading.Event()
    runner.after_step[2] = cancelled.set
    assert pipeline(requests, stops=[cancelled.is_set] * len(TEXTS)) == [None] * len(TEXTS)
    assert len(runner.step_rows) == 2


def test_a_stream_stops_when_its_consumer_stops_asking(model) -> None:
    pipeline, runner = pipeline_of(model)
    pieces = pipeline.stream(TEXTS[1], max_output_tokens=STEPS)
    for _ in range(3):
        next(pieces)
    pieces.close()  # what a cancelled TranslateStream amounts to: no more next() calls
    assert len(runner.step_rows) == 3


@pytest.mark.parametrize("options", OPTIONS, ids=["greedy", "beam3"])
def test_chunked_decoding_gives_the_same_results_as_unchunked(model, options) -> None:
    requests = [TranslationRequest(t, options) for t in TEXTS]
    whole, whole_runner = pipeline_of(model, chunk_bytes=1 << 40)
    chunked, chunked_runner = pipeline_of(model, chunk_bytes=1)  # every text its own chunk
    between: list[int] = []
    expected = whole(requests)
    results = chunked(requests, between_chunks=lambda: between.append(chunked_runner.encodes))
    assert whole_runner.encodes == 1 and chunked_runner.encodes == len(TEXTS)
    assert between == [1, 2, 3, 4]  # the hook runs between chunks, never before the first or after the last
    assert all(same(r, e) for r, e in zip(results, expected, strict=True))


def test_chunks_stay_within_the_byte_budget_and_a_stopped_call_skips_its_later_chunks(model) -> None:
    options = DecodeOptions(beam_size=2, max_output_tokens=STEPS)
    pipeline, runner = pipeline_of(model)
    per_text = 2 * pipeline.footprint.row_bytes(20, STEPS, False)
    pipeline.chunk_bytes = 2 * per_text
    assert pipeline.chunks(20, np.full(5, STEPS), options) == [[0, 1], [2, 3], [4]]
    pipeline.chunk_bytes = 1  # one text per chunk
    cancelled = threading.Event()
    runner.after_step[1] = cancelled.set
    results = pipeline([TranslationRequest(t, options) for t in TEXTS], stops=[cancelled.is_set] * len(TEXTS))
    assert results == [None] * len(TEXTS)
    assert runner.encodes == 1 and len(runner.step_rows) == 1


def test_the_footprint_is_measured_from_the_graphs(model) -> None:
    pipeline = TranslationPipeline(model)
    footprint = pipeline.footprint
    # The tiny Transformer (d_model 16): per layer, cross keys+values per source token and self-attention
    # keys+values per output token, float32; and its vocabulary.
    layers = sum(1 for name in pipeline.runner.memory_names if name.startswith("cross_key"))
    assert layers >= 1 and footprint.fixed == 0
    assert footprint.per_source_token == layers * 2 * 16 * 4
    assert footprint.per_step == layers * 2 * 16 * 4
    assert footprint.vocab == pipeline.tokenizer.get_vocab_size()


@pytest.mark.skipif(not (EXPORTED / "transformer" / "1").is_dir(), reason="no committed translation model")
@pytest.mark.parametrize("beam_size", [1, 4])
def test_the_committed_transformer_gives_the_same_results_chunked(beam_size) -> None:
    model = load_version(EXPORTED / "transformer" / "1", intra_op_threads=1)
    options = DecodeOptions(beam_size=beam_size, n_best=min(2, beam_size), alignment=True)
    requests = [TranslationRequest(t, options) for t in TEXTS]
    expected = TranslationPipeline(model, chunk_bytes=1 << 40)(requests)
    results = TranslationPipeline(model, chunk_bytes=1)(requests)
    assert all(same(r, e) for r, e in zip(results, expected, strict=True))


# -- the batcher hands the signals over ----------------------------------------------------------------
class StoppablePipeline:
    """Stands in for translation: takes stop signals and a between-chunks hook; each text is a chunk."""

    takes_stop_signals = True

    def __init__(self) -> None:
        self.model = SimpleNamespace(name="m", version="1")
        self.batches: list[list[str]] = []
        self.gates: dict[str, tuple[threading.Event, threading.Event]] = {}  # text -> (reached, go)
        self.seen_stopped: dict[str, bool] = {}

    def gate(self, text: str) -> tuple[threading.Event, threading.Event]:
        return self.gates.setdefault(text, (threading.Event(), threading.Event()))

    def estimate_tokens(self, text: str) -> int:
        return 1

    def __call__(self, texts: Sequence[str], timings: StageTimings | None = None,
                 stops: Sequence[Callable[[], bool]] | None = None,
                 between_chunks: Callable[[], None] | None = None) -> list[Any]:
        assert stops is not None
        self.batches.append(list(texts))
        outputs: list[Any] = []
        for position, text in enumerate(texts):
            if position and between_chunks is not None:
                between_chunks()
            if text in self.gates:
                reached, go = self.gates[text]
                reached.set()
                assert go.wait(10)
            self.seen_stopped[text] = stops[position]()
            outputs.append(None if stops[position]() else f"out:{text}")
        return outputs


def stoppable_batcher(pipeline: StoppablePipeline) -> DynamicBatcher:
    config = BatchConfig(max_batch_size=32, max_queue_delay_ms=0.0, max_queue_texts=100, batch_token_budget=10_000)
    b = DynamicBatcher(pipeline, config, ThreadPoolExecutor(2), ServingMetrics())  # type: ignore[arg-type]
    b.start()
    return b


async def until(event: threading.Event) -> None:
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, 10)


def test_a_cancelled_call_is_seen_as_stopped_by_the_running_pipeline_and_its_batch_mate_completes() -> None:
    pipeline = StoppablePipeline()
    reached, go = pipeline.gate("a2")

    async def scenario() -> Any:
        b = stoppable_batcher(pipeline)
        first = asyncio.create_task(b.submit(["a1", "a2"]))
        second = asyncio.create_task(b.submit(["b1"]))
        await until(reached)  # both calls run in one batch, now inside text a2
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        go.set()
        result = await second
        await b.close()
        return result

    result = asyncio.run(scenario())
    assert pipeline.batches == [["a1", "a2", "b1"]]
    assert pipeline.seen_stopped == {"a1": False, "a2": True, "b1": False}
    assert result.outputs == ["out:b1"]


def test_a_call_whose_deadline_passes_mid_run_is_stopped_and_answered_deadline_exceeded() -> None:
    pipeline = StoppablePipeline()
    reached, go = pipeline.gate("slow")

    async def scenario() -> None:
        b = stoppable_batcher(pipeline)
        call = asyncio.create_task(b.submit(["slow"], timeout=0.2))
        await until(reached)
        # The deadline is what is tested: let it pass while the pipeline holds the call, then let the
        # pipeline look at the call's signal.
        await asyncio.sleep(0.25)
        go.set()
        with pytest.raises(DeadlineExpiredError):
            await call
        await b.close()

    asyncio.run(scenario())
    assert pipeline.seen_stopped == {"slow": True}


def test_calls_queued_during_a_heavy_batch_run_between_its_chunks() -> None:
    pipeline = StoppablePipeline()
    reached, go = pipeline.gate("heavy1")
    _, last_go = pipeline.gate("heavy3")

    async def scenario() -> tuple[Any, Any]:
        b = stoppable_batcher(pipeline)
        heavy = asyncio.create_task(b.submit(["heavy1", "heavy2", "heavy3"]))
        await until(reached)
        other_heavy = asyncio.create_task(b.submit(["other"], group=object()))  # a batch of its own
        light = asyncio.create_task(b.submit(["light"]))
        while b.queued_texts < 2:
            await asyncio.sleep(0)
        go.set()
        light_result = await light  # answered while the heavy batch is still held in its last chunk
        assert not heavy.done()
        last_go.set()
        heavy_result = await heavy
        assert (await other_heavy).outputs == ["out:other"]
        await b.close()
        return light_result, heavy_result

    light_result, heavy_result = asyncio.run(scenario())
    assert light_result.outputs == ["out:light"]
    assert heavy_result.outputs == ["out:heavy1", "out:heavy2", "out:heavy3"]
    # The light call ran between the heavy call's chunks; the other heavy call waited for its own turn.
    assert pipeline.batches == [["heavy1", "heavy2", "heavy3"], ["light"], ["other"]]


# -- the per-call budget, through the real server ------------------------------------------------------
def test_a_call_over_the_cost_budget_is_refused_naming_the_values_and_the_limit(translation_server) -> None:
    with grpc.insecure_channel(translation_server.target) as channel:
        stub = translation_pb2_grpc.TranslationStub(channel)
        request = translation_pb2.TranslateRequest(
            texts=["In the beginning, God created the heavens."] * 64,
            options=translation_pb2.DecodingOptions(beam_size=16, max_output_tokens=256))
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            stub.Translate(request, timeout=30)
        assert time.monotonic() - started < 10  # refused before decoding, not after
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.value.details() == (
        "texts x options.beam_size x output tokens: 64 texts x 16 beams x 16384 output tokens in all "
        "(options.max_output_tokens 256) = 262144 exceeds the limit of 65536 per call; send fewer texts, "
        "a smaller beam_size or a lower max_output_tokens")
