"""seqserve.v1.Classification: validate, pick the model, run it through the model's batcher, answer.

Classify serves models of task "classification" (any label set) and, since a sentiment model is a
classifier with the labels negative/neutral/positive, the sentiment models too (through the same
pipeline class; Sentiment.Analyze keeps serving them as before).
"""

from __future__ import annotations

from typing import Any

import grpc
from seqserve.v1 import classification_pb2, classification_pb2_grpc, sentiment_pb2

from service.grpc.batched import Served, Submission, serve_batched
from service.grpc.calls import Call, CallRunner
from service.grpc.validation import MAX_MODEL_NAME_CHARS, RequestError, TextLimits, validate_texts
from service.metrics.registry import ServingMetrics
from service.pipelines.classification import TASK, TASKS, ClassificationPipeline, ClassPrediction
from service.registry.manager import ModelManager
from service.registry.registry import ModelRegistry

SERVICE_NAME = classification_pb2.DESCRIPTOR.services_by_name["Classification"].full_name


def result_fields(prediction: ClassPrediction, tokens: bool = True) -> dict[str, Any]:
    """The fields a ClassifyResult and a SentimentResult share (same names, same messages); `tokens`:
    False when the request set omit_tokens (the per-token messages were most of building a result)."""
    return {
        "label": prediction.label,
        # The dict is in the model's label order (pipeline contract), so the list keeps it.
        "probabilities": [
            sentiment_pb2.ClassProbability(label=label, probability=probability)
            for label, probability in prediction.probabilities.items()
        ],
        "tokens": [
            sentiment_pb2.TokenAttention(token=t.token, weight=t.weight, start=t.start, end=t.end)
            for t in prediction.tokens
        ] if tokens else [],
        "truncated": prediction.truncated,
    }


def to_result(prediction: ClassPrediction, tokens: bool = True) -> classification_pb2.ClassifyResult:
    return classification_pb2.ClassifyResult(**result_fields(prediction, tokens))


def task_for(registry: ModelRegistry, name: str) -> str:
    """The task a Classify call is resolved under: the named model's when it is a sentiment model;
    with no name, classification while a classification model is loaded, else sentiment."""
    if name:
        model = registry.models.get(name)
        return model.task if model is not None and model.task in TASKS else TASK
    return TASK if registry.by_task(TASK) or not registry.by_task("sentiment") else "sentiment"


def check_classifier(registry: ModelRegistry, name: str) -> None:
    """NOT_FOUND for a name no Classify-able model has, listing the models of BOTH tasks Classify serves: the
    registry's own message lists only task "classification" ("loaded: none" while two sentiment models
    answer Classify). An over-long name is left to resolve_model, which refuses it without echoing it."""
    model = registry.models.get(name)
    if not name or len(name) > MAX_MODEL_NAME_CHARS or (model is not None and model.task in TASKS):
        return
    usable = ", ".join(m.name for m in registry.by_task() if m.task in TASKS) or "none"
    raise RequestError(grpc.StatusCode.NOT_FOUND,
                       f"model {name!r} is not a loaded classification or sentiment model (loaded: {usable})")


class ClassificationServicer(classification_pb2_grpc.ClassificationServicer):
    def __init__(self, manager: ModelManager, limits: TextLimits, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._limits = limits
        self._calls = CallRunner(SERVICE_NAME, ("Classify",), metrics)

    async def Classify(
        self, request: classification_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassifyResponse:
        return await self._calls.run("Classify", context, lambda call: self._classify(request, call, context))

    async def _classify(
        self, request: classification_pb2.ClassifyRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassifyResponse:
        texts = list(request.texts)
        validate_texts(texts, self._limits)  # before the model: a bad call is refused whatever it names
        check_classifier(self._manager.registry, request.model)
        task = task_for(self._manager.registry, request.model)
        served: Served[ClassificationPipeline, ClassPrediction] = await serve_batched(
            self._manager, task, request.model, ClassificationPipeline, lambda _: Submission(texts), call, context)
        tokens = not request.omit_tokens
        return classification_pb2.ClassifyResponse(results=[to_result(p, tokens) for p in served.outputs],
                                                   model=served.model_ref)
