"""The one-item-per-run policy as a batch setting: the runner, the batcher enforcing it, its default from
the manifest and its override, and the one exception-to-status table."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from exported_models import latest_version_dir

from service.batching.batcher import DynamicBatcher
from service.batching.errors import BatcherClosedError, DeadlineExpiredError, QueueFullError
from service.batching.runs import NO_LIMIT, items_per_run_for, run_in_runs
from service.grpc.statuses import status_of
from service.grpc.validation import RequestError
from service.metrics.registry import ServingMetrics
from service.model.manifest import read_manifest
from service.model.model_config import BatchConfig, ModelConfigError, load_model_config
from service.model.timing import StageTimings


class Runs:
    """Records each run it is handed; pads to its longest item, so each run's padding share differs."""

    def __init__(self, stoppable: bool = False) -> None:
        self.model = SimpleNamespace(name="m", version="1")
        self.runs: list[list[str]] = []
        self.stops_seen: list[int] = []
        if stoppable:
            self.takes_stop_signals = True

    def estimate_tokens(self, item: str) -> int:
        return len(item)

    def __call__(self, items: Sequence[str], timings: StageTimings | None = None,
                 stops: Sequence[Callable[[], bool]] | None = None,
                 between_chunks: Callable[[], None] | None = None) -> list[Any]:
        self.runs.append(list(items))
        if stops is not None:
            self.stops_seen.append(len(stops))
        if timings is not None:
            longest = max(len(i) for i in items)
            timings.padding_ratio = 1 - sum(len(i) for i in items) / (longest * len(items))
        return [f"out:{i}" for i in items]


def test_the_runner_cuts_a_batch_into_runs_of_at_most_n_items_in_order() -> None:
    pipeline = Runs()
    timings = StageTimings()
    assert run_in_runs(pipeline, ["a", "bb", "ccc", "d", "ee"], 2, timings) == ["out:a", "out:bb", "out:ccc",  # type: ignore[arg-type]
                                                                                "out:d", "out:ee"]
    assert pipeline.runs == [["a", "bb"], ["ccc", "d"], ["ee"]]
    assert timings.padding_ratio == pytest.approx((0.25 + 1 / 3 + 0) / 3)  # the runs' mean
    pipeline.runs.clear()
    run_in_runs(pipeline, ["a", "bb", "ccc"], NO_LIMIT)  # type: ignore[arg-type]
    assert pipeline.runs == [["a", "bb", "ccc"]]  # no limit: one run, the pipeline's own padding share


def test_a_stoppable_pipeline_gets_each_runs_stop_signals_and_the_hook_between_runs() -> None:
    pipeline = Runs(stoppable=True)
    hooks: list[int] = []
    stops = [lambda: False] * 3
    run_in_runs(pipeline, ["a", "b", "c"], 1, stops=stops,  # type: ignore[arg-type]
                between_chunks=lambda: hooks.append(len(pipeline.runs)))
    assert pipeline.runs == [["a"], ["b"], ["c"]]
    assert pipeline.stops_seen == [1, 1, 1]
    assert hooks == [1, 2]  # between runs, never before the first: light calls get in as between chunks


def test_the_batcher_runs_a_batch_in_runs_of_its_items_per_run() -> None:
    pipeline = Runs()

    async def scenario() -> list[Any]:
        config = BatchConfig(max_batch_size=32, max_queue_delay_ms=50.0, items_per_run=1)
        b: DynamicBatcher[str, str] = DynamicBatcher(pipeline, config, ThreadPoolExecutor(1),  # type: ignore[arg-type]
                                                     ServingMetrics())
        b.start()
        results = await asyncio.gather(b.submit(["a", "bb"]), b.submit(["ccc"]))
        await b.close()
        return [r.outputs for r in results]

    assert asyncio.run(scenario()) == [["out:a", "out:bb"], ["out:ccc"]]
    assert sorted(pipeline.runs) == [["a"], ["bb"], ["ccc"]]  # one item per run, the calls batched together


@pytest.mark.parametrize(("name", "limit"), [("sentiment-bigru", NO_LIMIT), ("sentiment-bigru-int8", 1),
                                             ("ner-minilm-int8", 1), ("sasrec-ml1m", NO_LIMIT),
                                             ("sasrec-ml1m-int8", 1), ("transformer-int8", 1)])
def test_the_manifest_sets_one_item_per_run_for_dynamically_quantized_graphs(name: str, limit: int) -> None:
    model = SimpleNamespace(manifest=read_manifest(latest_version_dir(name)))
    assert items_per_run_for(model, 0) == limit  # type: ignore[arg-type]
    assert items_per_run_for(model, 8) == 8  # type: ignore[arg-type]  # the model config overrides it


def test_the_model_config_sets_items_per_run_per_model_and_refuses_a_negative_one(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": {"sentiment-bigru-int8": {"items_per_run": 64}}}))
    config = load_model_config(path, BatchConfig())
    assert config.for_model("sentiment-bigru-int8").batching.items_per_run == 64
    assert config.for_model("other").batching.items_per_run == 0
    path.write_text(json.dumps({"models": {"a": {"items_per_run": -1}}}))
    with pytest.raises(ModelConfigError, match="items_per_run"):
        load_model_config(path, BatchConfig())


def test_one_table_gives_every_refusal_its_status_and_a_bug_none() -> None:
    assert status_of(RequestError(grpc.StatusCode.NOT_FOUND, "model 'x' is not loaded")) == \
        (grpc.StatusCode.NOT_FOUND, "model 'x' is not loaded")
    assert status_of(QueueFullError("queue full")) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
    assert status_of(BatcherClosedError("model m is not being served")) == \
        (grpc.StatusCode.UNAVAILABLE, "model m is not being served; retry")
    assert status_of(DeadlineExpiredError("deadline passed")) == (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed")
    assert status_of(KeyError("bug")) is None  # CallRunner answers INTERNAL
