"""How many items one onnxruntime run may hold, and the one runner that enforces it.

A dynamically quantized graph (int8 made by quantize_dynamic) computes its activation scales over the
whole batch tensor, so a text batched with others would get another answer than alone (measured per
task in docs/serving.md). Its model therefore runs one item per run: the registry sets BatchConfig
items_per_run from the manifest (`items_per_run_for`), the batcher runs every batch through
`run_in_runs`, and evaluation (training/evaluate) calls `run_pipeline`, which is the same runner
with the same setting, so published numbers are the served numbers. A pipeline never sees the policy:
handed one item, it runs one item (translation: one text, its beams in one run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar, overload

from service.model.loaded_model import LoadedModel
from service.model.pipeline import Pipeline, Stop, StoppablePipeline, is_stoppable
from service.model.timing import StageTimings

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

NO_LIMIT = 0  # as a resolved limit; in BatchConfig, 0 means "the manifest decides" (items_per_run_for)


def items_per_run_for(model: LoadedModel, configured: int = 0) -> int:
    """The limit a model runs under (NO_LIMIT or N): the configured one (BatchConfig.items_per_run) if
    set, else 1 for a dynamically quantized graph and no limit for the others."""
    if configured > 0:
        return configured
    return 1 if model.manifest.dynamically_quantized else NO_LIMIT


def run_in_runs(
    pipeline: Pipeline[RequestT, ResultT] | StoppablePipeline[RequestT, ResultT], items: Sequence[RequestT],
    items_per_run: int, timings: StageTimings | None = None, stops: Sequence[Stop] | None = None,
    between_chunks: Callable[[], None] | None = None,
) -> list[ResultT | None]:
    """The pipeline's outputs for `items`, in runs of at most `items_per_run` consecutive items (0: one
    run). `stops` and `between_chunks` reach a StoppablePipeline; the hook is also called between two
    runs, as between two chunks of one run, so light calls still get in. None only where a stop fired."""
    timings = timings if timings is not None else StageTimings()
    size = items_per_run if items_per_run > 0 else max(1, len(items))
    outputs: list[ResultT | None] = []
    ratios: list[float] = []
    before = timings.padding_ratio
    for start in range(0, len(items), size):
        if start and between_chunks is not None:
            between_chunks()
        run = items[start : start + size]
        timings.padding_ratio = None  # a run that pads nothing (no text with words) leaves it unset
        if is_stoppable(pipeline):
            run_stops = None if stops is None else stops[start : start + size]
            outputs.extend(pipeline(run, timings, stops=run_stops, between_chunks=between_chunks))
        else:
            outputs.extend(pipeline(run, timings))
        if timings.padding_ratio is not None:
            ratios.append(timings.padding_ratio)
    # Each run sets its own padding share; the batch's is their mean (one run: exactly the pipeline's).
    timings.padding_ratio = sum(ratios) / len(ratios) if ratios else before
    return outputs


@overload  # first: a stoppable pipeline's ResultT is its result without the None a stop leaves
def run_pipeline(pipeline: StoppablePipeline[RequestT, ResultT], items: Sequence[RequestT],
                 timings: StageTimings | None = None) -> list[ResultT]: ...


@overload
def run_pipeline(pipeline: Pipeline[RequestT, ResultT], items: Sequence[RequestT],
                 timings: StageTimings | None = None) -> list[ResultT]: ...


def run_pipeline(
    pipeline: Pipeline[RequestT, ResultT] | StoppablePipeline[RequestT, ResultT], items: Sequence[RequestT],
    timings: StageTimings | None = None,
) -> list[ResultT]:
    """What evaluation calls: `items` through the pipeline exactly as the server runs them (the model's
    manifest limit, no stop signals), so every output is the one a client gets."""
    outputs = run_in_runs(pipeline, items, items_per_run_for(pipeline.model), timings)
    done = [output for output in outputs if output is not None]
    if len(done) != len(items):  # only a stop signal leaves an item without output, and none was given
        raise RuntimeError(f"model {pipeline.model.name} left {len(items) - len(done)} items without output")
    return done
