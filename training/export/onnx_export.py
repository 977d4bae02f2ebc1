"""torch -> ONNX with the dynamo exporter, dynamic axes named, checked, in one self-contained file."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import onnx
import torch
from torch import nn

OPSET = 18


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: pathlib.Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    axes: dict[str, dict[int, str]],
) -> onnx.ModelProto:
    """Export `module` with the dynamic axes in `axes` ({tensor name: {dim: axis name}}).

    Axis names apply to inputs (as torch.export.Dim) and to outputs: the exporter's shape inference
    sometimes pins an output dimension to the example's size even though the graph computes it
    dynamically (seen on the attention output of a GRU model), so output dims named in `axes` are
    rewritten to that name before checking.
    """
    module.eval()
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {
        name: {dim: dims.setdefault(axis, torch.export.Dim(axis)) for dim, axis in axes.get(name, {}).items()}
        for name in input_names
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        example_inputs,
        str(path),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=dynamic_shapes,
        opset_version=OPSET,
        external_data=False,
    )
    return finish_graph(path, axes)


def finish_graph(path: pathlib.Path, axes: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """Name the dynamic axes of the saved graph's inputs and outputs, drop the traced intermediate
    shapes, check the graph and save it back.

    The exporter records intermediate shapes traced at the example's size; onnxruntime would report
    those (e.g. attention [batch, 17]) as the output shapes. Shapes are re-inferred at load.
    """
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    for value in [*model.graph.input, *model.graph.output]:
        for dim, axis in axes.get(value.name, {}).items():
            shape_dim = value.type.tensor_type.shape.dim[dim]
            shape_dim.Clear()
            shape_dim.dim_param = axis
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model


def describe_io(model: onnx.ModelProto) -> dict[str, list[dict[str, object]]]:
    """Inputs and outputs as the manifest records them: name, dtype, shape (ints or axis names)."""

    def spec(value: onnx.ValueInfoProto) -> dict[str, object]:
        tensor = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
                "shape": shape}

    return {"inputs": [spec(v) for v in model.graph.input], "outputs": [spec(v) for v in model.graph.output]}
