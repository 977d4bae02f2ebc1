"""seqserve.v1.Ner: validate, pick the model, run the texts through the model's batcher, answer."""

from __future__ import annotations

import grpc
from seqserve.v1 import ner_pb2, ner_pb2_grpc

from service.grpc.batched import Served, Submission, serve_batched
from service.grpc.calls import Call, CallRunner
from service.grpc.validation import TextLimits, validate_texts
from service.metrics.registry import ServingMetrics
from service.pipelines.ner import TASK, NerPipeline, NerPrediction
from service.registry.manager import ModelManager

SERVICE_NAME = ner_pb2.DESCRIPTOR.services_by_name["Ner"].full_name


def to_result(prediction: NerPrediction, include_tokens: bool) -> ner_pb2.NerResult:
    return ner_pb2.NerResult(
        entities=[
            ner_pb2.Entity(type=e.type, text=e.text, start=e.start, end=e.end, confidence=e.confidence)
            for e in prediction.entities
        ],
        tokens=[
            ner_pb2.TaggedToken(token=w.text, start=w.start, end=w.end, tag=w.tag, confidence=w.confidence)
            for w in prediction.words
        ] if include_tokens else [],
        truncated=prediction.truncated,
    )


class NerServicer(ner_pb2_grpc.NerServicer):
    def __init__(self, manager: ModelManager, limits: TextLimits, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._limits = limits
        self._calls = CallRunner(SERVICE_NAME, ("Recognize",), metrics)

    async def Recognize(
        self, request: ner_pb2.RecognizeEntitiesRequest, context: grpc.aio.ServicerContext
    ) -> ner_pb2.RecognizeEntitiesResponse:
        return await self._calls.run("Recognize", context, lambda call: self._recognize(request, call, context))

    async def _recognize(
        self, request: ner_pb2.RecognizeEntitiesRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> ner_pb2.RecognizeEntitiesResponse:
        texts = list(request.texts)
        validate_texts(texts, self._limits)  # before the model: a bad call is refused whatever it names
        served: Served[NerPipeline, NerPrediction] = await serve_batched(
            self._manager, TASK, request.model, NerPipeline, lambda _: Submission(texts), call, context)
        return ner_pb2.RecognizeEntitiesResponse(
            results=[to_result(p, request.include_tokens) for p in served.outputs], model=served.model_ref)
