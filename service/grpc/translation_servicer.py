"""seqserve.v1.Translation: unary Translate through the model's batcher, and TranslateStream
(greedy, one text) stepping in the inference pool so decoding never runs on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
from seqserve.v1 import translation_pb2, translation_pb2_grpc

from service.config import Settings
from service.grpc.batched import Served, Submission, live_pipeline, model_ref, serve_batched
from service.grpc.calls import Call, CallRunner
from service.grpc.translation_validation import validate_stream, validate_translate
from service.grpc.validation import TextLimits, validate_texts
from service.metrics.registry import ServingMetrics
from service.model.timing import StageTimings
from service.pipelines.translation import TASK, StreamPiece, Translation, TranslationPipeline, TranslationRequest
from service.registry.manager import ModelManager

SERVICE_NAME = translation_pb2.DESCRIPTOR.services_by_name["Translation"].full_name
DEFAULT_MAX_COST = Settings.max_translate_cost


def is_low(confidence: float | None, min_confidence: float) -> bool:
    """Flag only a confidence that exists: a model without one is never called low (nor high)."""
    return confidence is not None and confidence < min_confidence


def to_result(translation: Translation, min_confidence: float = 0.0) -> translation_pb2.TranslationResult:
    result = translation_pb2.TranslationResult(
        hypotheses=[translation_pb2.Hypothesis(text=h.text, score=h.score, log_prob=h.log_prob, tokens=h.tokens)
                    for h in translation.hypotheses],
        source_tokens=translation.source_token_count,
        low_confidence=is_low(translation.confidence, min_confidence),
    )
    if translation.confidence is not None:
        result.confidence = translation.confidence
    if translation.alignment is not None:
        alignment = translation.alignment
        result.alignment.CopyFrom(translation_pb2.Alignment(
            source_tokens=alignment.source_tokens, target_tokens=alignment.target_tokens,
            weights=alignment.weights.astype(float).ravel().tolist(),
        ))
    return result


class TranslationServicer(translation_pb2_grpc.TranslationServicer):
    def __init__(self, manager: ModelManager, limits: TextLimits, metrics: ServingMetrics,
                 max_cost: int = DEFAULT_MAX_COST, min_confidence: float = 0.0, heavy_at_once: int = 2) -> None:
        self._manager = manager
        # Heavy calls (more than one decoding chunk) decoding at once, over every translation model: the
        # memory bound of docs/reliability.md counts --inference-workers of them, which batch-at-a-time
        # decoding gave by holding an inference thread per batch. Scheduling sessions hand their thread
        # back between slices, so three models' heavy calls could decode together (measured: 540 MiB
        # peak for three worst-accepted calls, against the 512Mi limit); the others wait here, unqueued.
        self._heavy_slots = asyncio.Semaphore(max(1, heavy_at_once))
        self._limits = limits
        self._max_cost = max_cost  # texts x beam x output tokens per Translate call
        self._metrics = metrics
        self._min_confidence = min_confidence  # 0: nothing is flagged
        self._calls = CallRunner(SERVICE_NAME, ("Translate", "TranslateStream"), metrics)

    async def Translate(
        self, request: translation_pb2.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> translation_pb2.TranslateResponse:
        return await self._calls.run("Translate", context, lambda call: self._translate(request, call, context))

    async def _translate(
        self, request: translation_pb2.TranslateRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> translation_pb2.TranslateResponse:
        texts = list(request.texts)
        validate_texts(texts, self._limits)  # before the model: a bad call is refused whatever it names

        def validate(pipeline: TranslationPipeline) -> Submission[TranslationRequest]:
            options, source_tokens = validate_translate(request, self._limits, pipeline, self._max_cost)
            # Calls with other options may share the batch: the pipeline decodes each options group apart.
            # A call too big for one decoding chunk runs in a batch of its own (a group of one), so light
            # calls never wait for all of its chunks: the batcher runs them between two of its chunks.
            # A cancelled call (client gone, deadline passed) stops decoding at the next step: the batcher
            # hands the pipeline its stop signal.
            steps = np.array([pipeline.max_steps(count, options) for count in source_tokens])
            group = object() if len(pipeline.chunks(max(source_tokens), steps, options)) > 1 else None
            return Submission([TranslationRequest(t, options) for t in texts], group)

        def gate(submission: Submission[TranslationRequest]) -> contextlib.AbstractAsyncContextManager[Any]:
            return self._heavy_slots if submission.group is not None else contextlib.nullcontext()

        served: Served[TranslationPipeline, Translation] = await serve_batched(
            self._manager, TASK, request.model, TranslationPipeline, validate, call, context, gate)
        return translation_pb2.TranslateResponse(results=[to_result(t, self._min_confidence) for t in served.outputs],
                                                 model=served.model_ref)

    async def TranslateStream(
        self, request: translation_pb2.TranslateStreamRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # Pieces are written with context.write, so CallRunner still maps errors and records metrics.
        await self._calls.run("TranslateStream", context, lambda call: self._stream(request, call, context))

    async def _stream(
        self, request: translation_pb2.TranslateStreamRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> None:
        # Held for the whole stream: a hot swap does not change it midway.
        pipeline = live_pipeline(self._manager, TASK, request.model, TranslationPipeline, call).pipeline
        validate_stream(request, self._limits, pipeline)
        call.version = pipeline.model.version
        ref = model_ref(pipeline.model)
        loop = asyncio.get_running_loop()
        executor = self._manager.inference_executor
        pieces: Iterator[StreamPiece] = pipeline.stream(request.text, request.max_output_tokens)
        timings = StageTimings()
        index = 0
        while True:
            # One decoder step per executor job: the event loop stays free between pieces.
            with timings.stage("inference"):
                piece = await loop.run_in_executor(executor, next, pieces, None)
            if piece is None:
                break
            message = translation_pb2.TranslatePiece(token=piece.token, text=piece.text, index=index, model=ref,
                                                     low_confidence=is_low(piece.confidence, self._min_confidence))
            if piece.confidence is not None:
                message.confidence = piece.confidence
            await context.write(message)
            index += 1
        self._metrics.observe_stages(pipeline.model, timings)
