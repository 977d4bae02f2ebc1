"""Store a graph's float32 weights as float16 on disk, computed in float32 at run time.

A model whose float32 weights would overrun exported/'s size budget can halve its files without
changing the arithmetic: the weights are first rounded to float16 in torch (`round_weights_to_half`,
before the export, so the torch model that parity is checked against *is* the served model), then
every large float32 initializer of the exported graph becomes a float16 initializer followed by a
Cast back to float32. Rounded values survive float16 exactly, so the Cast restores the very float32
numbers the torch model holds; onnxruntime's constant folding (ORT_ENABLE_ALL, as the server opens
every graph) runs the Cast once at load, so each run computes in float32 as before
(tests/test_half_storage.py checks both, and that no Cast is left in the optimised graph).

Names stay as the exporter gave them (the float16 tensor keeps the name; the Cast's output takes a
suffix), so training/export/shared_weights.py still finds the initializers that several graphs share.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

MIN_ELEMENTS = 256  # smaller tensors (biases, scalars) stay float32: nothing to gain


def round_weights_to_half(model: nn.Module) -> float:
    """Round every floating parameter to the nearest float16 value (kept as float32); returns the largest
    absolute change. Values beyond float16's range would become inf: refused."""
    largest = 0.0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.is_floating_point():
                continue
            if parameter.abs().max() > float(torch.finfo(torch.float16).max):
                raise ValueError(f"{name} has values beyond float16's range")
            rounded = parameter.to(torch.float16).to(parameter.dtype)
            largest = max(largest, float((rounded - parameter).abs().max()))
            parameter.copy_(rounded)
    return largest


def store_half(path: pathlib.Path) -> dict[str, int]:
    """Rewrite the graph at `path`: float32 initializers of >= MIN_ELEMENTS values become float16 + Cast.

    Refuses a weight that float16 does not hold exactly (call `round_weights_to_half` before exporting).
    """
    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    converted = 0
    for initializer in graph.initializer:
        if initializer.data_type != onnx.TensorProto.FLOAT or int(np.prod(initializer.dims)) < MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(initializer)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            raise ValueError(f"{path.name}: {initializer.name} is not float16-exact; round the weights first")
        name = initializer.name
        initializer.CopyFrom(numpy_helper.from_array(half, name=name))
        as_float = f"{name}__float32"
        for node in graph.node:
            node.input[:] = [as_float if value == name else value for value in node.input]
        casts.append(helper.make_node("Cast", [name], [as_float], to=onnx.TensorProto.FLOAT, name=f"{name}__cast"))
        converted += 1
    nodes = [*casts, *graph.node]  # casts before every reader: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return {"float16_initializers": converted}
