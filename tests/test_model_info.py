"""A manifest becomes ModelInfo: nested metrics are flattened, hashes and specs are carried over."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from service.grpc.model_info import flatten_metrics, model_info
from service.model.loaded_model import LoadedModel
from service.model.manifest import Manifest


def test_numeric_leaves_are_flattened_to_dotted_keys_and_the_rest_is_left_out() -> None:
    metrics = {
        "split": "test",
        "test": {"pooled": {"macro_f1": 0.81, "n": 2371, "per_class_f1": {"neutral": 0.5}}},
        "history": [0.1, 0.2],
        "converged": True,
        "nan": float("nan"),
    }
    assert flatten_metrics(metrics) == {
        "test.pooled.macro_f1": 0.81,
        "test.pooled.n": 2371.0,
        "test.pooled.per_class_f1.neutral": 0.5,
    }


def test_model_info_carries_the_manifest_facts() -> None:
    data: dict[str, Any] = {
        "format_version": 1, "name": "sentiment-x", "version": "3", "task": "sentiment",
        "files": {"model.onnx": "aa" * 32, "tokenizer.json": "bb" * 32},
        "tokenizer": "tokenizer.json", "special_tokens": {"pad_id": 0, "unk_id": 1, "unk": "[UNK]"},
        "onnx": {"file": "model.onnx", "opset": 18,
                 "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
                 "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", 3]}]},
        "labels": ["negative", "neutral", "positive"],
        "metrics": {"test": {"macro_f1": 0.7}},
        "data": {"data_sha256": "cc" * 32, "train_sha256": "dd" * 32},
    }
    model = LoadedModel(Manifest.from_data(pathlib.Path("/nowhere"), data), session=None, tokenizer=None)  # type: ignore[arg-type]
    info = model_info(model, is_default=True)
    assert (info.name, info.version, info.task, info.opset) == ("sentiment-x", "3", "sentiment", 18)
    assert info.is_default
    assert [(t.name, t.dtype, list(t.shape)) for t in info.inputs] == [("input_ids", "int64", ["batch", "sequence"])]
    assert list(info.outputs[0].shape) == ["batch", "3"]
    assert list(info.labels) == ["negative", "neutral", "positive"]
    assert dict(info.file_sha256) == data["files"]
    assert dict(info.metrics) == {"test.macro_f1": 0.7}
    assert info.data_sha256 == "cc" * 32
    assert json.loads(info.manifest_json) == data
