"""Make one model version ready to serve: verify, open, build its pipeline, warm it up.

Every step may refuse the version; the caller then keeps serving whatever it served before. The
warm-up runs the manifest's `sample_inputs` through the very pipeline that will serve, so the first
real call does not pay onnxruntime's first-run cost and a graph that loads but cannot run is caught
before it takes traffic.
"""

from __future__ import annotations

import logging
import math
import pathlib
import time
from dataclasses import dataclass

from service.batching.runs import run_pipeline
from service.model.loaded_model import LoadedModel
from service.model.pipeline import AnyPipeline
from service.pipelines.factory import build_pipeline
from service.runtime.version_loader import load_version

log = logging.getLogger(__name__)


class LoadError(Exception):
    """A version failed a step; the message is one line fit for logs, metrics and clients."""


@dataclass(frozen=True)
class ServableVersion:
    model: LoadedModel
    pipeline: AnyPipeline | None   # None for a task without a pipeline: V2 raw tensors only
    load_seconds: float


def warm_up(model: LoadedModel, pipeline: AnyPipeline | None) -> None:
    samples = model.manifest.spec.sample_inputs
    if pipeline is None or not samples:
        log.info("model %s version %s: no sample_inputs or no pipeline; not warmed up", model.name, model.version)
        return
    if not isinstance(samples, list) or not all(isinstance(s, str) and s for s in samples):
        raise LoadError("sample_inputs must be a list of non-empty strings")
    outputs = run_pipeline(pipeline, samples)  # in the runs the server will use
    if len(outputs) != len(samples):
        raise LoadError(f"warm-up gave {len(outputs)} outputs for {len(samples)} sample inputs")
    for output in outputs:
        probabilities = getattr(output, "probabilities", None)
        if isinstance(probabilities, dict) and not all(math.isfinite(p) for p in probabilities.values()):
            raise LoadError("warm-up produced non-finite probabilities")


def prepare_version(
    version_dir: pathlib.Path, intra_op_threads: int = 1, allow_spinning: bool = False
) -> ServableVersion:
    """Raise LoadError naming the failed step; never leaks a traceback into the message."""
    start = time.perf_counter()
    folder_name = version_dir.parent.name
    try:
        model = load_version(version_dir, intra_op_threads=intra_op_threads, allow_spinning=allow_spinning)
    except Exception as exc:
        raise LoadError(_one_line(exc)) from exc
    if model.name != folder_name:
        raise LoadError(f"manifest name {model.name!r} does not match folder {folder_name!r}")
    try:
        pipeline = build_pipeline(model)
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"cannot build its {model.task} pipeline ({type(exc).__name__}: {exc})") from exc
    try:
        warm_up(model, pipeline)
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(f"warm-up failed ({type(exc).__name__}: {_one_line(exc)})") from exc
    return ServableVersion(model=model, pipeline=pipeline, load_seconds=time.perf_counter() - start)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:500]
