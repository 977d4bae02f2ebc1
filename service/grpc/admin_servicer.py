"""seqserve.v1.Admin: load, unload and list model versions (auth: service/security/auth.py)."""

from __future__ import annotations

import grpc
from seqserve.v1 import admin_pb2, admin_pb2_grpc, models_pb2

from service.grpc.calls import Call, CallRunner
from service.grpc.validation import MAX_MODEL_NAME_CHARS, RequestError
from service.metrics.registry import ServingMetrics
from service.registry.loader import LoadError
from service.registry.manager import ModelManager

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name


def _checked_name(name: str, required: bool = True) -> str:
    if required and not name:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "name: required")
    if len(name) > MAX_MODEL_NAME_CHARS or "/" in name or name in (".", ".."):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "name: not a model name")
    return name


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, manager: ModelManager, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._calls = CallRunner(SERVICE_NAME, ("LoadModel", "UnloadModel", "ListVersions"), metrics)

    async def LoadModel(
        self, request: admin_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.LoadModelResponse:
        async def handle(call: Call) -> admin_pb2.LoadModelResponse:
            name = _checked_name(request.name)
            if request.version and not request.version.isdigit():
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "version: must be a number or empty")
            try:
                model = await self._manager.load(name, request.version)
            except LookupError as exc:
                raise RequestError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
            except LoadError as exc:
                serving = self._manager.registry.models.get(name)
                still = f"; version {serving.version} keeps serving" if serving else ""
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"{exc}{still}") from None
            call.model = model.name
            return admin_pb2.LoadModelResponse(model=models_pb2.ModelRef(name=model.name, version=model.version))

        return await self._calls.run("LoadModel", context, handle)

    async def UnloadModel(
        self, request: admin_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UnloadModelResponse:
        async def handle(call: Call) -> admin_pb2.UnloadModelResponse:
            try:
                model = await self._manager.unload(_checked_name(request.name))
            except LookupError as exc:
                raise RequestError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
            call.model = model.name
            return admin_pb2.UnloadModelResponse(model=models_pb2.ModelRef(name=model.name, version=model.version))

        return await self._calls.run("UnloadModel", context, handle)

    async def ListVersions(
        self, request: admin_pb2.ListVersionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListVersionsResponse:
        async def handle(call: Call) -> admin_pb2.ListVersionsResponse:
            try:
                states = self._manager.list_versions(_checked_name(request.name, required=False))
            except LookupError as exc:
                raise RequestError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
            return admin_pb2.ListVersionsResponse(versions=[
                admin_pb2.VersionStatus(name=s.name, version=s.version, state=s.state, reason=s.reason)
                for s in states
            ])

        return await self._calls.run("ListVersions", context, handle)
