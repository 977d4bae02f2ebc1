"""seqserve.v1.Sentiment: validate, pick the model, run it through the model's batcher, answer."""

from __future__ import annotations

import grpc
from seqserve.v1 import sentiment_pb2, sentiment_pb2_grpc

from service.grpc.batched import Served, Submission, serve_batched
from service.grpc.calls import Call, CallRunner
from service.grpc.classification_servicer import result_fields
from service.grpc.validation import TextLimits, validate_texts
from service.metrics.registry import ServingMetrics
from service.pipelines.sentiment import TASK, SentimentPipeline, SentimentPrediction
from service.registry.manager import ModelManager

SERVICE_NAME = sentiment_pb2.DESCRIPTOR.services_by_name["Sentiment"].full_name


def to_result(prediction: SentimentPrediction, tokens: bool = True) -> sentiment_pb2.SentimentResult:
    return sentiment_pb2.SentimentResult(**result_fields(prediction, tokens))


class SentimentServicer(sentiment_pb2_grpc.SentimentServicer):
    def __init__(self, manager: ModelManager, limits: TextLimits, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._limits = limits
        self._calls = CallRunner(SERVICE_NAME, ("Analyze",), metrics)

    async def Analyze(
        self, request: sentiment_pb2.AnalyzeSentimentRequest, context: grpc.aio.ServicerContext
    ) -> sentiment_pb2.AnalyzeSentimentResponse:
        return await self._calls.run("Analyze", context, lambda call: self._analyze(request, call, context))

    async def _analyze(
        self, request: sentiment_pb2.AnalyzeSentimentRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> sentiment_pb2.AnalyzeSentimentResponse:
        texts = list(request.texts)
        validate_texts(texts, self._limits)  # before the model: a bad call is refused whatever it names
        # Tokenizing and onnxruntime release the GIL: the worker thread runs while the loop serves others.
        served: Served[SentimentPipeline, SentimentPrediction] = await serve_batched(
            self._manager, TASK, request.model, SentimentPipeline, lambda _: Submission(texts), call, context)
        tokens = not request.omit_tokens
        return sentiment_pb2.AnalyzeSentimentResponse(results=[to_result(p, tokens) for p in served.outputs],
                                                      model=served.model_ref)
