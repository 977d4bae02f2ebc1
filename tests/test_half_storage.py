"""Float16 storage of float32 weights (training/export/half_storage.py): the served numbers are those of
the float16-rounded weights computed in float32, and onnxruntime folds the casts away at load."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from training.export.half_storage import round_weights_to_half, store_half


def linear_graph(path: pathlib.Path, weight: np.ndarray, bias: np.ndarray) -> None:
    """y = x @ weight + bias, built by hand (no exporter needed)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["xw"]), helper.make_node("Add", ["xw", "bias"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def session(path: pathlib.Path, optimized: pathlib.Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the server opens graphs
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_rounding_moves_each_weight_to_its_nearest_float16() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    before = layer.weight.detach().clone()
    largest = round_weights_to_half(layer)
    assert torch.equal(layer.weight, before.half().float())
    assert largest == pytest.approx(float((before - layer.weight.detach()).abs().max()))
    assert 0 < largest < 1e-3  # weights ~0.1: float16 keeps ~3 significant digits


def test_weights_beyond_float16_range_are_refused() -> None:
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="beyond float16's range"):
        round_weights_to_half(layer)


def test_stored_half_computes_the_rounded_float32_numbers_and_folds_the_casts(tmp_path: pathlib.Path) -> None:
    generator = np.random.default_rng(0)
    weight = generator.normal(size=(64, 32)).astype(np.float16).astype(np.float32)
    bias = generator.normal(size=32).astype(np.float32)  # 32 values: below MIN_ELEMENTS, stays float32
    linear_graph(tmp_path / "float32.onnx", weight, bias)
    linear_graph(tmp_path / "half.onnx", weight, bias)
    assert store_half(tmp_path / "half.onnx") == {"float16_initializers": 1}
    stored = {i.name: i.data_type for i in onnx.load(str(tmp_path / "half.onnx")).graph.initializer}
    assert stored == {"weight": onnx.TensorProto.FLOAT16, "bias": onnx.TensorProto.FLOAT}
    assert (tmp_path / "half.onnx").stat().st_size < 0.6 * (tmp_path / "float32.onnx").stat().st_size

    x = generator.normal(size=(5, 64)).astype(np.float32)
    expected = session(tmp_path / "float32.onnx").run(None, {"x": x})[0]
    served = session(tmp_path / "half.onnx", tmp_path / "optimized.onnx").run(None, {"x": x})[0]
    assert np.array_equal(served, expected)  # the same float32 weights, the same kernels: bit for bit
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert "Cast" not in {node.op_type for node in optimized.graph.node}  # folded once, at load
    assert {i.data_type for i in optimized.graph.initializer} == {onnx.TensorProto.FLOAT}


def test_a_weight_that_float16_does_not_hold_is_refused(tmp_path: pathlib.Path) -> None:
    weight = np.full((64, 32), 0.1, dtype=np.float32)  # 0.1 is not a float16 value
    linear_graph(tmp_path / "model.onnx", weight, np.zeros(32, dtype=np.float32))
    with pytest.raises(ValueError, match="weight is not float16-exact; round the weights first"):
        store_half(tmp_path / "model.onnx")
