"""A loaded model's manifest as the `ModelInfo` message that Models.ListModels/GetModel return."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from seqserve.v1 import models_pb2

from service.model.loaded_model import LoadedModel
from service.model.manifest_schema import TensorSpec
from service.registry.registry import LoadFailure


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict under dotted keys: {"test": {"macro_f1": .8}} -> {"test.macro_f1": .8}.

    Lists (confusion matrices, per-epoch histories) and strings are left out: they have no single
    number to report, and the whole manifest is in `manifest_json` anyway.
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def tensor_spec(spec: TensorSpec) -> models_pb2.TensorSpec:
    return models_pb2.TensorSpec(name=spec.name, dtype=spec.dtype, shape=[str(dim) for dim in spec.shape])


def data_sha256(data: Mapping[str, Any]) -> str:
    """The manifest's data hash; older or hand-written manifests name it differently."""
    for key in ("data_sha256", "split_sha256", "train_sha256"):
        if isinstance(data.get(key), str):
            return str(data[key])
    return ""


def load_failure(failure: LoadFailure) -> models_pb2.LoadFailure:
    return models_pb2.LoadFailure(
        name=failure.model, version=failure.version, reason=failure.reason, unix_time=failure.unix_time
    )


def model_info(
    model: LoadedModel,
    is_default: bool,
    failures: Sequence[LoadFailure] = (),
    loaded_unix_time: float = 0.0,
) -> models_pb2.ModelInfo:
    data = model.manifest.data
    onnx = model.manifest.spec.onnx
    return models_pb2.ModelInfo(
        name=model.name,
        version=model.version,
        task=model.task,
        is_default=is_default,
        opset=onnx.opset or 0,
        inputs=[tensor_spec(spec) for spec in onnx.inputs],
        outputs=[tensor_spec(spec) for spec in onnx.outputs],
        labels=model.manifest.labels,
        file_sha256=model.manifest.files,
        metrics=flatten_metrics(model.manifest.metrics),
        data_sha256=data_sha256(model.manifest.spec.data),
        manifest_json=json.dumps(data, sort_keys=True),
        load_failures=[load_failure(f) for f in failures],
        loaded_unix_time=loaded_unix_time,
    )
