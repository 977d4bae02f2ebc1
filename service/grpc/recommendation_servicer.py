"""seqserve.v1.Recommendation: resolve the history, run it through the model's batcher, answer with titles."""

from __future__ import annotations

import grpc
from seqserve.v1 import models_pb2, recommendation_pb2, recommendation_pb2_grpc

from service.grpc.batched import run_batched
from service.grpc.calls import Call, CallRunner
from service.grpc.recommendation_validation import to_request
from service.grpc.validation import RequestError, resolve_model
from service.metrics.registry import ServingMetrics
from service.model.loaded_model import LoadedModel
from service.pipelines.item_catalogue import CatalogueItem
from service.pipelines.recommendation import TASK, Recommendation, RecommendationPipeline
from service.registry.manager import ModelManager

SERVICE_NAME = recommendation_pb2.DESCRIPTOR.services_by_name["Recommendation"].full_name


def to_item(item: CatalogueItem) -> recommendation_pb2.Item:
    return recommendation_pb2.Item(id=item.id, title=item.title, year=item.year, genres=item.genres, name=item.name)


def to_response(result: Recommendation, history: tuple[int, ...], pipeline: RecommendationPipeline,
                model: LoadedModel) -> recommendation_pb2.RecommendResponse:
    catalogue = pipeline.catalogue
    return recommendation_pb2.RecommendResponse(
        items=[recommendation_pb2.RecommendedItem(item=to_item(s.item), score=s.score) for s in result.items],
        attention=[
            recommendation_pb2.HistoryWeight(item=to_item(catalogue.get(history[index])), weight=weight, index=index)
            for index, weight in enumerate(result.attention, start=result.first_used)
        ],
        fallback=result.fallback,
        truncated=result.truncated,
        history_used=len(result.attention),
        max_history=pipeline.max_history,
        model=models_pb2.ModelRef(name=model.name, version=model.version),
        whole_history_scored=pipeline.reads_whole_history and not result.fallback,
    )


class RecommendationServicer(recommendation_pb2_grpc.RecommendationServicer):
    def __init__(self, manager: ModelManager, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._calls = CallRunner(SERVICE_NAME, ("Recommend",), metrics)

    def _pipeline(self, model: LoadedModel) -> RecommendationPipeline:
        batcher = self._manager.batcher(model.name)
        if batcher is None or not isinstance(batcher.pipeline, RecommendationPipeline):
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"model {model.name!r} is being unloaded; retry")
        return batcher.pipeline

    async def Recommend(
        self, request: recommendation_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RecommendResponse:
        return await self._calls.run("Recommend", context, lambda call: self._recommend(request, call, context))

    async def _recommend(
        self, request: recommendation_pb2.RecommendRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RecommendResponse:
        model = resolve_model(self._manager.registry, TASK, request.model)
        call.model = model.name
        pipeline = self._pipeline(model)
        checked = to_request(request, pipeline)
        # Calls with histories of similar length share a batch (the pipeline's estimate_tokens).
        result = await run_batched(self._manager, model, [checked], context)
        call.version = result.model.version
        # Titles come from the catalogue the ids were resolved against; versions of one model share it.
        return to_response(result.outputs[0], checked.history, pipeline, result.model)
