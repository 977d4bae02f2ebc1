"""The one path of a batched call: resolve the model -> the live pipeline of its version -> validate
against that pipeline -> submit to the model's batcher -> the ModelRef of the version that ran it.

Every task servicer goes through `serve_batched` (TranslateStream, which is not batched, through
`live_pipeline`), so deadlines, cancellation, queue limits and the swap-safe version report work the
same for every task. The batcher's refusals reach CallRunner, which answers them by the one table in
statuses.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from seqserve.v1 import models_pb2

from service.batching.batcher import BatchResult, DynamicBatcher
from service.grpc.calls import Call
from service.grpc.validation import RequestError, resolve_model
from service.model.loaded_model import LoadedModel
from service.registry.manager import ModelManager

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")
PipelineT = TypeVar("PipelineT")


@dataclass(frozen=True)
class LivePipeline(Generic[PipelineT]):
    """The pipeline serving a model right now, and the batcher its calls queue on."""

    pipeline: PipelineT
    batcher: DynamicBatcher[Any, Any]


@dataclass(frozen=True)
class Submission(Generic[RequestT]):
    """A validated call's items; `group`: it only shares a batch with calls of the same group."""

    items: Sequence[RequestT]
    group: Hashable = None


@dataclass(frozen=True)
class Served(Generic[PipelineT, ResultT]):
    pipeline: PipelineT          # the one the call was validated against
    submission: Submission[Any]  # what validation made of the request
    result: BatchResult[ResultT]

    @property
    def outputs(self) -> list[ResultT]:
        return self.result.outputs

    @property
    def model_ref(self) -> models_pb2.ModelRef:
        return model_ref(self.result.model)


def model_ref(model: LoadedModel) -> models_pb2.ModelRef:
    return models_pb2.ModelRef(name=model.name, version=model.version)


def live_pipeline(manager: ModelManager, task: str, model_name: str, kind: type[PipelineT],
                  call: Call) -> LivePipeline[PipelineT]:
    """The task's model (named, or its default; else NOT_FOUND), recorded on the call, and its live
    pipeline; UNAVAILABLE while it is being unloaded."""
    model = resolve_model(manager.registry, task, model_name)
    call.model = model.name
    batcher = manager.batcher(model.name)
    if batcher is None or not isinstance(batcher.pipeline, kind):
        raise RequestError(grpc.StatusCode.UNAVAILABLE, f"model {model.name!r} is being unloaded; retry")
    return LivePipeline(batcher.pipeline, batcher)


async def submit_batched(
    batcher: DynamicBatcher[RequestT, ResultT], items: Sequence[RequestT], context: grpc.aio.ServicerContext,
    group: Hashable = None,
) -> BatchResult[ResultT]:
    """Queue a call's items on a batcher within the client's deadline."""
    return await batcher.submit(items, timeout=context.time_remaining(), group=group)


async def serve_batched(
    manager: ModelManager, task: str, model_name: str, kind: type[PipelineT],
    validate: Callable[[PipelineT], Submission[Any]], call: Call, context: grpc.aio.ServicerContext,
    gate: Callable[[Submission[Any]], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> Served[PipelineT, Any]:
    """The whole path of a batched task call. `validate` checks the request against the live pipeline
    (its limits, catalogue, tokenizer) and gives the items; they run batched with other calls' in a
    worker thread, and the call records the version that actually ran them (a hot swap may come between).
    `gate`: held around the submission (translation: how many heavy calls decode at once).
    The caller annotates the result type: Served[SentimentPipeline, SentimentPrediction]."""
    live = live_pipeline(manager, task, model_name, kind, call)
    submission = validate(live.pipeline)
    async with gate(submission) if gate is not None else contextlib.nullcontext():
        result = await submit_batched(live.batcher, submission.items, context, submission.group)
    call.version = result.model.version
    return Served(live.pipeline, submission, result)
