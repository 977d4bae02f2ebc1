"""seqserve.v1.Recommendation: resolve the history, run it through the model's batcher, answer with titles."""

from __future__ import annotations

import grpc
from seqserve.v1 import recommendation_pb2, recommendation_pb2_grpc

from service.grpc.batched import Served, Submission, model_ref, serve_batched
from service.grpc.calls import Call, CallRunner
from service.grpc.recommendation_validation import to_request
from service.metrics.registry import ServingMetrics
from service.model.loaded_model import LoadedModel
from service.pipelines.item_catalogue import CatalogueItem
from service.pipelines.recommendation import TASK, Recommendation, RecommendationPipeline, RecommendationRequest
from service.registry.manager import ModelManager

SERVICE_NAME = recommendation_pb2.DESCRIPTOR.services_by_name["Recommendation"].full_name


def to_item(item: CatalogueItem) -> recommendation_pb2.Item:
    return recommendation_pb2.Item(id=item.id, title=item.title, year=item.year, genres=item.genres, name=item.name,
                                   key=item.key)


def to_response(result: Recommendation, history: tuple[int, ...], pipeline: RecommendationPipeline,
                model: LoadedModel, attention: bool = True) -> recommendation_pb2.RecommendResponse:
    """`attention`: False when the request set omit_attention (a catalogue item per history item used is
    most of a long history's response); history_used still counts the items the model read."""
    catalogue = pipeline.catalogue
    return recommendation_pb2.RecommendResponse(
        items=[recommendation_pb2.RecommendedItem(item=to_item(s.item), score=s.score) for s in result.items],
        attention=[
            recommendation_pb2.HistoryWeight(item=to_item(catalogue.get(history[index])), weight=weight, index=index)
            for index, weight in enumerate(result.attention, start=result.first_used)
        ] if attention else [],
        fallback=result.fallback,
        truncated=result.truncated,
        history_used=len(result.attention),
        max_history=pipeline.max_history,
        model=model_ref(model),
        whole_history_scored=pipeline.reads_whole_history and not result.fallback,
    )


class RecommendationServicer(recommendation_pb2_grpc.RecommendationServicer):
    def __init__(self, manager: ModelManager, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._calls = CallRunner(SERVICE_NAME, ("Recommend",), metrics)

    async def Recommend(
        self, request: recommendation_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RecommendResponse:
        return await self._calls.run("Recommend", context, lambda call: self._recommend(request, call, context))

    async def _recommend(
        self, request: recommendation_pb2.RecommendRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RecommendResponse:
        def validate(pipeline: RecommendationPipeline) -> Submission[RecommendationRequest]:
            return Submission([to_request(request, pipeline)])

        # Calls with histories of similar length share a batch (the pipeline's estimate_tokens).
        served: Served[RecommendationPipeline, Recommendation] = await serve_batched(
            self._manager, TASK, request.model, RecommendationPipeline, validate, call, context)
        checked: RecommendationRequest = served.submission.items[0]
        # Titles come from the catalogue the ids were resolved against; versions of one model share it.
        return to_response(served.outputs[0], checked.history, served.pipeline, served.result.model,
                           attention=not request.omit_attention)
