"""seqserve.v1.Sentiment: validate, pick the model, run its pipeline off the event loop, answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import Executor

import grpc
from seqserve.v1 import models_pb2, sentiment_pb2, sentiment_pb2_grpc

from service.grpc.calls import Call, CallRunner
from service.grpc.validation import TextLimits, resolve_model, validate_texts
from service.metrics.registry import ServingMetrics
from service.pipelines.sentiment import TASK, SentimentPipeline, SentimentPrediction
from service.pipelines.timing import StageTimings
from service.repository.repository import ModelRepository

SERVICE_NAME = sentiment_pb2.DESCRIPTOR.services_by_name["Sentiment"].full_name


def to_result(prediction: SentimentPrediction) -> sentiment_pb2.SentimentResult:
    return sentiment_pb2.SentimentResult(
        label=prediction.label,
        # The dict is in the model's label order (pipeline contract), so the list keeps it.
        probabilities=[
            sentiment_pb2.ClassProbability(label=label, probability=probability)
            for label, probability in prediction.probabilities.items()
        ],
        tokens=[
            sentiment_pb2.TokenAttention(token=t.token, weight=t.weight, start=t.start, end=t.end)
            for t in prediction.tokens
        ],
        truncated=prediction.truncated,
    )


class SentimentServicer(sentiment_pb2_grpc.SentimentServicer):
    def __init__(
        self,
        repository: ModelRepository,
        pipelines: Mapping[str, SentimentPipeline],
        limits: TextLimits,
        executor: Executor,
        metrics: ServingMetrics,
    ) -> None:
        self._repository = repository
        self._pipelines = pipelines
        self._limits = limits
        self._executor = executor
        self._metrics = metrics
        self._calls = CallRunner(SERVICE_NAME, ("Analyze",), metrics)

    async def Analyze(
        self, request: sentiment_pb2.AnalyzeSentimentRequest, context: grpc.aio.ServicerContext
    ) -> sentiment_pb2.AnalyzeSentimentResponse:
        return await self._calls.run("Analyze", context, lambda call: self._analyze(request, call))

    async def _analyze(
        self, request: sentiment_pb2.AnalyzeSentimentRequest, call: Call
    ) -> sentiment_pb2.AnalyzeSentimentResponse:
        texts = list(request.texts)
        validate_texts(texts, self._limits)
        model = resolve_model(self._repository, TASK, request.model)
        call.model = model.name
        pipeline = self._pipelines[model.name]
        timings = StageTimings()
        # Tokenizing and onnxruntime release the GIL; in a worker thread they leave the event loop
        # free to accept and validate other calls meanwhile.
        loop = asyncio.get_running_loop()
        predictions = await loop.run_in_executor(self._executor, pipeline, texts, timings)
        self._metrics.observe_stages(model, timings)
        return sentiment_pb2.AnalyzeSentimentResponse(
            results=[to_result(p) for p in predictions],
            model=models_pb2.ModelRef(name=model.name, version=model.version),
        )
