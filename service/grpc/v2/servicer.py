"""inference.GRPCInferenceService (KServe V2 / Open Inference Protocol) on the seqserve port.

Raw tensor access to every loaded ONNX graph, whatever its task: a model's main graph under the
model's name, its other graphs under `<model>.<graph>` (translation: `transformer` is the encoder,
`transformer.decoder_step` the decoder step). The inputs are checked against the graph's own
signature (names, datatypes, ranks, fixed dimensions), against each other (every named dimension one
size, shapes.py) and against the call's work bound, and run in the same inference thread pool as the
task servicers, under the same thread budget, through the same dynamic batcher: calls whose rows
stack without padding share a batch (graph_batching.py).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from concurrent.futures import Executor
from dataclasses import dataclass
from importlib import metadata

import grpc
import numpy as np
import onnxruntime as ort
from seqserve.oip import grpc_service_pb2 as pb
from seqserve.oip import grpc_service_pb2_grpc as pb_grpc

from service.batching.runs import NO_LIMIT
from service.grpc.batched import submit_batched
from service.grpc.calls import Call, CallRunner, max_response_bytes
from service.grpc.readiness import Readiness
from service.grpc.v2.graph_batching import GraphPipeline, batch_axis, join_rows, row_group, split_rows
from service.grpc.v2.shapes import Dims, check_agreement, check_output_bytes, check_positions, named_sizes
from service.grpc.v2.tensors import ORT_TYPES, decode_input, element_count, encode_output, v2_shape
from service.grpc.validation import MAX_MODEL_NAME_CHARS, RequestError
from service.metrics.registry import ServingMetrics
from service.model.loaded_model import LoadedModel
from service.model.manifest_schema import TensorSpec, Zeros
from service.model.timing import StageTimings
from service.registry.manager import ModelManager

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


def server_version() -> str:
    try:
        return metadata.version("seqserve")
    except metadata.PackageNotFoundError:
        return "0"


@dataclass(frozen=True)
class Graph:
    """One servable ONNX graph: a loaded model's main graph, or another of its graphs."""

    model: LoadedModel
    file: str                  # the graph's file in the version folder
    session: ort.InferenceSession
    name: str                  # its V2 model name

    @property
    def is_main(self) -> bool:
        return self.session is self.model.session


def graph_names(model: LoadedModel) -> dict[str, str]:
    """V2 name -> graph file: the main graph under the model's name, the others as `<model>.<stem>`."""
    main = model.manifest.spec.onnx.file
    names = {model.name: main}
    for file, session in model.sessions.items():
        if session is not model.session:
            names[f"{model.name}.{pathlib.PurePath(file).stem}"] = file
    return names


def empty_cache_axes(graph: Graph) -> dict[str, frozenset[int]]:
    """Input -> the axes its decoder contract starts at length 0 (manifest decoding.initial_state:
    `{"zeros": ["batch", 4, 0, 64]}` is an empty key/value cache). Every other empty tensor is refused:
    onnxruntime aborts the process on some (the GRU kernels)."""
    decoding = graph.model.manifest.spec.decoding
    if decoding is None or graph.file != decoding.decoder:
        return {}
    return {name: frozenset(axis for axis, d in enumerate(spec.zeros) if d == 0)
            for name, spec in decoding.initial_state.items() if isinstance(spec, Zeros)}


def manifest_specs(graph: Graph, kind: str) -> list[TensorSpec]:
    """The manifest's specs of the graph's "inputs" or "outputs" (per graph, or the main graph's), or []."""
    onnx_spec = graph.model.manifest.spec.onnx
    per_graph = onnx_spec.graphs.get(graph.file)
    if per_graph is not None:
        return list(per_graph.inputs if kind == "inputs" else per_graph.outputs)
    if graph.is_main:
        return list(onnx_spec.inputs if kind == "inputs" else onnx_spec.outputs)
    return []


def input_namings(graph: Graph) -> dict[str, list[Dims]]:
    """Input -> its dims as the manifest names them (if it does) and as the graph itself does."""
    recorded = {s.name: list(s.shape) for s in manifest_specs(graph, "inputs")}
    return {arg.name: ([recorded[arg.name]] if arg.name in recorded else []) + [list(arg.shape)]
            for arg in graph.session.get_inputs()}


def output_namings(graph: Graph) -> dict[str, tuple[str, list[Dims]]]:
    """Output -> (its onnxruntime type, its dims as the manifest names them (if it does) and as the graph does)."""
    recorded = {s.name: list(s.shape) for s in manifest_specs(graph, "outputs")}
    return {arg.name: (arg.type, ([recorded[arg.name]] if arg.name in recorded else []) + [list(arg.shape)])
            for arg in graph.session.get_outputs()}


def tensor_metadata(graph: Graph, kind: str) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    """The manifest's specs (named dims are dynamic), else the graph's own.

    The manifest first: it is what the exporter declared, with the names of the dynamic axes, and it
    covers graphs whose traced signature fixed an axis that is really dynamic (an exporter that traced
    at one length, say). The committed graphs agree with their manifests.
    """
    specs = manifest_specs(graph, kind)
    if specs:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=s.name, datatype=ORT_TYPES.get(f"tensor({_ORT_NAMES.get(s.dtype, s.dtype)})", ""),
                shape=v2_shape(s.shape),
            )
            for s in specs
        ]
    args = graph.session.get_inputs() if kind == "inputs" else graph.session.get_outputs()
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
        manager: ModelManager,
        readiness: Readiness,
        executor: Executor,
        metrics: ServingMetrics,
        max_rows: int,
        max_elements: int,
        max_positions: int,
    ) -> None:
        self._manager = manager
        self._repository = manager.registry
        self._readiness = readiness
        self._executor = executor
        self._metrics = metrics
        self._max_rows = max_rows
        self._max_elements = max_elements
        self._max_positions = max_positions
        self._calls = CallRunner(SERVICE_NAME, METHODS, metrics)

    def _graph(self, name: str, version: str) -> Graph:
        if len(name) > MAX_MODEL_NAME_CHARS:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "model name too long")
        model = self._repository.models.get(name)
        if model is None and "." in name:
            model = self._repository.models.get(name.rsplit(".", 1)[0])
        files = graph_names(model) if model is not None else {}
        if name not in files:
            loaded = ", ".join(sorted(n for m in self._repository.models.values() for n in graph_names(m))) or "none"
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not loaded (loaded: {loaded})")
        assert model is not None
        if version and version != model.version:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} version {version[:20]!r} is not loaded (serving version {model.version})",
            )
        file = files[name]
        return Graph(model, file, model.sessions.get(file, model.session), name)

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
            try:
                graph = self._graph(request.name, request.version)
            except RequestError:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=self._readiness.ready and graph is not None)

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
            graph = self._graph(request.name, request.version)
            call.model = graph.model.name

            return pb.ModelMetadataResponse(
                name=graph.name, versions=[graph.model.version], platform="onnxruntime_onnx",
                inputs=tensor_metadata(graph, "inputs"), outputs=tensor_metadata(graph, "outputs"),
            )

        return await self._calls.run("ModelMetadata", context, handle)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def handle(call: Call) -> pb.ModelInferResponse:
            graph = self._graph(request.model_name, request.model_version)
            call.model = graph.model.name
            call.version = graph.model.version
            feeds = self._feeds(graph, request)
            graph_outputs = [o.name for o in graph.session.get_outputs()]
            wanted = [o.name for o in request.outputs] or graph_outputs
            unknown = [name for name in wanted if name not in graph_outputs]
            if unknown:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"outputs: {unknown[0][:100]!r} is not an output of {graph.name} ({', '.join(graph_outputs)})",
                )
            rows = next(iter(feeds.values())).shape[0] if feeds else 0
            # Rows of other calls stack on this call's only where the model's batch settings put no limit
            # on items per run (a dynamically quantized graph's do: its activation scales span the batch
            # tensor). Otherwise the call runs as sent: its rows are the one tensor the client chose.
            if rows > 0 and batch_axis(graph.session) is not None and self._stacks_rows(graph):
                model, arrays = await self._infer_batched(graph, feeds, wanted, call, context)
            else:
                model, arrays = graph.model, await self._infer_alone(graph, feeds, wanted, call)
            call.version = model.version
            response = pb.ModelInferResponse(model_name=graph.name, model_version=model.version, id=request.id)
            for name, array in zip(wanted, arrays, strict=True):
                tensor, raw = encode_output(name, np.asarray(array))
                response.outputs.append(tensor)
                response.raw_output_contents.append(raw)
            return response

        return await self._calls.run("ModelInfer", context, handle)

    def _stacks_rows(self, graph: Graph) -> bool:
        return self._manager.batch_settings(graph.model).items_per_run == NO_LIMIT

    async def _infer_batched(
        self, graph: Graph, feeds: dict[str, np.ndarray], wanted: list[str], call: Call,
        context: grpc.aio.ServicerContext,
    ) -> tuple[LoadedModel, list[np.ndarray]]:
        batcher = self._manager.graph_batcher(
            graph.model, graph.file, lambda: GraphPipeline(graph.model, graph.session)
        )
        result = await submit_batched(batcher, split_rows(feeds, wanted), context,
                                      group=row_group(graph.file, feeds, wanted))
        failures = [row for row in result.outputs if isinstance(row, Exception)]
        if failures:
            raise self._refused(graph, call, failures[0])
        return result.model, join_rows(result.outputs, wanted)

    async def _infer_alone(
        self, graph: Graph, feeds: dict[str, np.ndarray], wanted: list[str], call: Call
    ) -> list[np.ndarray]:
        timings = StageTimings()
        # A graph that runs N items per run (a dynamically quantized one: 1) runs a call's rows N at a time
        # too: each row's numbers are then its own, as in the task API, and memory follows one run of N
        # rows, not the whole call (64 rows of 256 subwords through the int8 MiniLM in one run peaked the
        # server at 1.3 GiB; one row per run at 0.3 GiB).
        per_run = self._manager.batch_settings(graph.model).items_per_run
        rows = next(iter(feeds.values())).shape[0] if feeds else 0
        runs = [feeds]
        if per_run != NO_LIMIT and rows > per_run and batch_axis(graph.session) is not None:
            runs = [{name: array[start:start + per_run] for name, array in feeds.items()}
                    for start in range(0, rows, per_run)]

        def run() -> list[np.ndarray]:
            with timings.stage("inference"):
                parts = [graph.session.run(wanted, part) for part in runs]
            if len(parts) == 1:
                return parts[0]
            return [np.concatenate([np.asarray(part[i]) for part in parts]) for i in range(len(wanted))]

        try:
            arrays = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except Exception as exc:
            raise self._refused(graph, call, exc) from exc
        self._metrics.observe_stages(graph.model, timings)
        return arrays

    def _refused(self, graph: Graph, call: Call, exc: Exception) -> RequestError:
        log.info("request %s: %s refused the inputs: %s", call.request_id, graph.name, exc)
        # onnxruntime's text names graph nodes and can hold paths: log it, tell the client less.
        return RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model {graph.name} could not run on these inputs ({type(exc).__name__}); check "
            "shapes and values against ModelMetadata",
        )

    def _feeds(self, graph: Graph, request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
        graph_inputs = {a.name: a for a in graph.session.get_inputs()}
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs",
            )
        # Each tensor against the graph's signature first, then the shapes against each other and the
        # work bound, and only then are payloads decoded: no bytes are copied for a call that is refused.
        starts_empty = empty_cache_axes(graph)
        shapes: dict[str, list[int]] = {}
        for index, tensor in enumerate(request.inputs):
            spec = graph_inputs.get(tensor.name)
            if spec is None:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"inputs[{index}]: {tensor.name[:100]!r} is not an input of {graph.name} "
                    f"({', '.join(graph_inputs)})",
                )
            if tensor.name in shapes:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"inputs[{index}]: {tensor.name!r} is given more than once")
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
            element_count(tensor, self._max_elements, starts_empty.get(tensor.name, frozenset()))
            shapes[tensor.name] = shape
        missing = [name for name in graph_inputs if name not in shapes]
        if missing:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"inputs: {', '.join(missing)} missing")
        namings = input_namings(graph)
        check_agreement(shapes, namings)
        check_positions(shapes, {name: list(arg.shape) for name, arg in graph_inputs.items()}, self._max_positions)
        outputs = output_namings(graph)
        asked = {o.name for o in request.outputs}  # none named: every output is sent
        if asked:
            outputs = {name: spec for name, spec in outputs.items() if name in asked}
        check_output_bytes(outputs, named_sizes(shapes, namings), max_response_bytes())
        return {
            tensor.name: decode_input(tensor, raw[index] if raw else None, self._max_elements,
                                      empty_axes=starts_empty.get(tensor.name, frozenset()))
            for index, tensor in enumerate(request.inputs)
        }
