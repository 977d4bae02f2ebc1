"""seqserve.v1.Models: what is loaded, with the manifest facts a client may want to check."""

from __future__ import annotations

import grpc
from seqserve.v1 import models_pb2, models_pb2_grpc

from service.grpc.calls import Call, CallRunner
from service.grpc.model_info import load_failure, model_info
from service.grpc.validation import MAX_MODEL_NAME_CHARS, RequestError
from service.metrics.registry import ServingMetrics
from service.model.loaded_model import LoadedModel
from service.registry.registry import ModelRegistry

SERVICE_NAME = models_pb2.DESCRIPTOR.services_by_name["Models"].full_name


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    def __init__(self, repository: ModelRegistry, metrics: ServingMetrics) -> None:
        self._repository = repository
        self._calls = CallRunner(SERVICE_NAME, ("ListModels", "GetModel"), metrics)

    def _info(self, model: LoadedModel) -> models_pb2.ModelInfo:
        return model_info(
            model,
            is_default=self._repository.default_name(model.task) == model.name,
            failures=self._repository.failures_of(model.name),
            loaded_unix_time=self._repository.loaded_at.get(model.name, 0.0),
        )

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        async def handle(call: Call) -> models_pb2.ListModelsResponse:
            # An unknown task filter is not an error: it just matches nothing.
            models = self._repository.by_task(request.task)
            # Models with no serving version at all would otherwise be invisible; their refusals
            # are listed apart (a task filter cannot apply: a refused model's task may be unknown).
            unserved = [load_failure(f) for f in self._repository.failures if f.model not in self._repository.models]
            return models_pb2.ListModelsResponse(
                models=[self._info(m) for m in models], unserved_failures=[] if request.task else unserved
            )

        return await self._calls.run("ListModels", context, handle)

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ModelInfo:
        async def handle(call: Call) -> models_pb2.ModelInfo:
            model = self._repository.models.get(request.name)
            if model is None:
                loaded = ", ".join(sorted(self._repository.models)) or "none"
                # The name is cut short before it is echoed: the message travels in a size-capped header.
                name = request.name[:MAX_MODEL_NAME_CHARS]
                message = f"model {name!r} is not loaded (loaded: {loaded})"
                raise RequestError(grpc.StatusCode.NOT_FOUND, message)
            call.model = model.name
            return self._info(model)

        return await self._calls.run("GetModel", context, handle)
