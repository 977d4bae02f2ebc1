"""inference.GRPCInferenceService (KServe V2 / Open Inference Protocol) on the seqserve port.

Raw tensor access to every loaded ONNX graph, whatever its task: the inputs are checked against the
graph's own signature (names, datatypes, ranks, fixed dimensions) and run in the same inference
thread pool as the task servicers, under the same thread budget.

Not through the dynamic batcher: merging raw tensors of different calls means padding them, and the
right padding value of an arbitrary input (a token id, a mask, a feature) is not known from the
graph. The task APIs (seqserve.v1.Sentiment, ...) batch; V2 runs each call as sent.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from importlib import metadata

import grpc
import numpy as np
from seqserve.oip import grpc_service_pb2 as pb
from seqserve.oip import grpc_service_pb2_grpc as pb_grpc

from service.grpc.calls import Call, CallRunner
from service.grpc.readiness import Readiness
from service.grpc.v2.tensors import ORT_TYPES, decode_input, encode_output, v2_shape
from service.grpc.validation import MAX_MODEL_NAME_CHARS, RequestError
from service.metrics.registry import ServingMetrics
from service.pipelines.timing import StageTimings
from service.repository.repository import LoadedModel, ModelRepository

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


def server_version() -> str:
    try:
        return metadata.version("seqserve")
    except metadata.PackageNotFoundError:
        return "0"


def tensor_metadata(model: LoadedModel, kind: str) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    """The manifest's specs (named dims are dynamic), else the graph's own.

    The manifest first: the exported sentiment graph records its attention output as [batch, 17],
    the length traced at export, though it really follows the input's sequence length.
    """
    specs = (model.manifest.data.get("onnx") or {}).get(kind)
    if specs:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=str(s["name"]), datatype=ORT_TYPES.get(f"tensor({_ORT_NAMES.get(s['dtype'], s['dtype'])})", ""),
                shape=v2_shape(s.get("shape", [])),
            )
            for s in specs
        ]
    args = model.session.get_inputs() if kind == "inputs" else model.session.get_outputs()
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=a.name, datatype=ORT_TYPES.get(a.type, a.type), shape=v2_shape(a.shape)
        )
        for a in args
    ]


# Manifest dtypes are numpy names; onnxruntime calls float32 "float" and float64 "double".
_ORT_NAMES = {"float32": "float", "float64": "double"}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        repository: ModelRepository,
        readiness: Readiness,
        executor: Executor,
        metrics: ServingMetrics,
        max_rows: int,
        max_elements: int,
    ) -> None:
        self._repository = repository
        self._readiness = readiness
        self._executor = executor
        self._metrics = metrics
        self._max_rows = max_rows
        self._max_elements = max_elements
        self._calls = CallRunner(SERVICE_NAME, METHODS, metrics)

    def _model(self, name: str, version: str) -> LoadedModel:
        if len(name) > MAX_MODEL_NAME_CHARS:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "model name too long")
        model = self._repository.models.get(name)
        if model is None:
            loaded = ", ".join(sorted(self._repository.models)) or "none"
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not loaded (loaded: {loaded})")
        if version and version != model.version:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} version {version[:20]!r} is not loaded (serving version {model.version})",
            )
        return model

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        async def handle(call: Call) -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._calls.run("ServerLive", context, handle)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        async def handle(call: Call) -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self._readiness.ready)

        return await self._calls.run("ServerReady", context, handle)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def handle(call: Call) -> pb.ModelReadyResponse:
            model = self._repository.models.get(request.name)
            ready = model is not None and request.version in ("", model.version) and self._readiness.ready
            return pb.ModelReadyResponse(ready=ready)

        return await self._calls.run("ModelReady", context, handle)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def handle(call: Call) -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name="seqserve", version=server_version(), extensions=[])

        return await self._calls.run("ServerMetadata", context, handle)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def handle(call: Call) -> pb.ModelMetadataResponse:
            model = self._model(request.name, request.version)
            call.model = model.name

            return pb.ModelMetadataResponse(
                name=model.name, versions=[model.version], platform="onnxruntime_onnx",
                inputs=tensor_metadata(model, "inputs"), outputs=tensor_metadata(model, "outputs"),
            )

        return await self._calls.run("ModelMetadata", context, handle)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def handle(call: Call) -> pb.ModelInferResponse:
            model = self._model(request.model_name, request.model_version)
            call.model = model.name
            call.version = model.version
            feeds = self._feeds(model, request)
            graph_outputs = [o.name for o in model.session.get_outputs()]
            wanted = [o.name for o in request.outputs] or graph_outputs
            unknown = [name for name in wanted if name not in graph_outputs]
            if unknown:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"outputs: {unknown[0][:100]!r} is not an output of {model.name} ({', '.join(graph_outputs)})",
                )
            timings = StageTimings()

            def run() -> list[np.ndarray]:
                with timings.stage("inference"):
                    return model.session.run(wanted, feeds)

            try:
                arrays = await asyncio.get_running_loop().run_in_executor(self._executor, run)
            except Exception as exc:
                log.info("request %s: %s refused the inputs: %s", call.request_id, model.name, exc)
                # onnxruntime's text names graph nodes and can hold paths: log it, tell the client less.
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"model {model.name} could not run on these inputs ({type(exc).__name__}); check "
                    "shapes and values against ModelMetadata",
                ) from exc
            self._metrics.observe_stages(model, timings)
            response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
            for name, array in zip(wanted, arrays, strict=True):
                tensor, raw = encode_output(name, np.asarray(array))
                response.outputs.append(tensor)
                response.raw_output_contents.append(raw)
            return response

        return await self._calls.run("ModelInfer", context, handle)

    def _feeds(self, model: LoadedModel, request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
        graph_inputs = {a.name: a for a in model.session.get_inputs()}
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs",
            )
        feeds: dict[str, np.ndarray] = {}
        for index, tensor in enumerate(request.inputs):
            spec = graph_inputs.get(tensor.name)
            if spec is None:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"inputs[{index}]: {tensor.name[:100]!r} is not an input of {model.name} "
                    f"({', '.join(graph_inputs)})",
                )
            expected_type = ORT_TYPES.get(spec.type, spec.type)
            if tensor.datatype != expected_type:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {tensor.name!r}: datatype {tensor.datatype[:20]!r}, the model takes {expected_type}",
                )
            expected_shape = v2_shape(spec.shape)
            shape = list(tensor.shape)
            if len(shape) != len(expected_shape) or any(
                e != -1 and e != d for e, d in zip(expected_shape, shape, strict=True)
            ):
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {tensor.name!r}: shape {shape[:8]} does not fit the model's {expected_shape}",
                )
            if expected_shape and expected_shape[0] == -1 and shape[0] > self._max_rows:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {tensor.name!r}: {shape[0]} rows exceeds the limit of {self._max_rows}",
                )
            feeds[tensor.name] = decode_input(tensor, raw[index] if raw else None, self._max_elements)
        missing = [name for name in graph_inputs if name not in feeds]
        if missing:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"inputs: {', '.join(missing)} missing")
        return feeds
