"""Shape rules a V2 call's inputs must meet TOGETHER before any onnxruntime session sees them.

tensors.py checks each tensor alone (datatype, byte count, no empty axis); the servicer checks each
against the graph's signature (rank, fixed dims, rows). What neither sees is a disagreement between
inputs: `input_ids` [2, 3] with `attention_mask` [1, 3]. onnxruntime itself refuses most of those with
an error, but the batched path splits a call into rows by its first input's batch size, so the shorter
input's later rows were empty tensors, and onnxruntime's GRU kernel aborts the whole process on an empty
tensor (issue #16: one call killed the server). So every named dimension must have one size across all
the inputs of a call, under both namings we have: the manifest's specs and the graph's own symbolic
dims (ONNX requires equal names to mean equal sizes, and the two sources may name axes differently).

Second rule: a call's work is bounded. The element limit alone (one gRPC message) let a single call
ask for a sequence of millions of positions: the seq2seq encoder needed 0.9 GB and 12 s for 100,000
(docs/serving.md). A call may carry at most `max_positions` positions (its rows times the product of
an input's named non-batch dimensions), the most a task call can carry; the batcher counts each row's
positions against the model's token budget, so rows of several calls do not stack past it either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from service.grpc.validation import RequestError

# One input's dims as one source names them: ints are fixed, strings named (symbolic), None unnamed.
Dims = Sequence[Any]


def is_named(dim: Any) -> bool:
    return isinstance(dim, str) and dim != ""


def check_agreement(shapes: Mapping[str, Sequence[int]], namings: Mapping[str, Sequence[Dims]]) -> None:
    """Every named dimension has one size across all inputs, else INVALID_ARGUMENT naming both inputs,
    the dimension and the two sizes. `shapes`: input -> its shape, in the order the call sent them;
    `namings`: input -> its dims under each naming source (the manifest's, the graph's own)."""
    for source in range(max((len(n) for n in namings.values()), default=0)):
        seen: dict[str, tuple[str, int, int]] = {}  # dim name -> (input, axis, size) where first seen
        for name, shape in shapes.items():
            sources = namings.get(name, ())
            if source >= len(sources):
                continue
            for axis, (dim, size) in enumerate(zip(sources[source], shape, strict=False)):
                if not is_named(dim):
                    continue
                first = seen.setdefault(dim, (name, axis, size))
                if first[2] != size:
                    raise RequestError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"inputs {first[0]!r} and {name!r} disagree on dimension {dim!r}: {first[2]} "
                        f"(axis {first[1]} of {first[0]!r}) vs {size} (axis {axis} of {name!r}); every input "
                        "must give a named dimension the same size",
                    )


def row_positions(shape: Sequence[int], dims: Dims) -> int:
    """Positions one row of this input spans: the product of its named dims past the batch axis
    (fixed dims are the model's own width, the same for every call)."""
    return math.prod(size for axis, (dim, size) in enumerate(zip(dims, shape, strict=False))
                     if axis > 0 and is_named(dim))


def call_positions(shapes: Mapping[str, Sequence[int]], graph_dims: Mapping[str, Dims]) -> tuple[str, int]:
    """(the input that spans most, rows x its positions). Python integers: no overflow."""
    best = ("", 0)
    for name, shape in shapes.items():
        dims = graph_dims.get(name, ())
        rows = shape[0] if shape and dims and is_named(dims[0]) else 1
        positions = rows * row_positions(shape, dims)
        if positions > best[1]:
            best = (name, positions)
    return best


def check_positions(shapes: Mapping[str, Sequence[int]], graph_dims: Mapping[str, Dims], limit: int) -> None:
    name, positions = call_positions(shapes, graph_dims)
    if positions > limit:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {name!r}: shape {list(shapes[name])[:8]} spans {positions} positions (rows x named "
            f"dimensions), the limit is {limit}",
        )


# Bytes per element of the output types the committed graphs produce (onnxruntime type strings).
_ELEMENT_BYTES = {"tensor(float)": 4, "tensor(double)": 8, "tensor(int64)": 8, "tensor(int32)": 4,
                  "tensor(float16)": 2, "tensor(int8)": 1, "tensor(uint8)": 1, "tensor(bool)": 1}


def named_sizes(shapes: Mapping[str, Sequence[int]], namings: Mapping[str, Sequence[Dims]]) -> dict[str, int]:
    """Dimension name -> its size in this call (the names agree across inputs: check_agreement ran)."""
    sizes: dict[str, int] = {}
    for name, shape in shapes.items():
        for dims in namings.get(name, ()):
            for dim, size in zip(dims, shape, strict=False):
                if is_named(dim):
                    sizes.setdefault(str(dim), int(size))
    return sizes


def check_output_bytes(outputs: Mapping[str, tuple[str, Sequence[Dims]]], sizes: Mapping[str, int],
                       limit: int) -> None:
    """Refuse a call whose answer is known from its input shapes to exceed the response limit, before
    onnxruntime computes it: the answer could not be sent, and computing it is where the memory goes (the GRU
    encoder's states for 64 x 256 positions are 50 MB, and peaked the server at 581 MiB).

    `outputs`: output name -> (onnxruntime type, its dims as the manifest and the graph name them). A dim whose
    size the inputs do not fix (a graph-internal name) counts as 1, so the estimate never over-refuses.
    """
    total, parts = 0, []
    for name, (element_type, namings) in outputs.items():
        best = 0
        for dims in namings:
            count = math.prod(int(d) if isinstance(d, int) and d > 0 else sizes.get(str(d), 1) for d in dims)
            best = max(best, count)
        size = best * _ELEMENT_BYTES.get(element_type, 4)
        total += size
        parts.append(f"{name} {size} bytes")
    if total > limit:
        raise RequestError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the outputs for these input shapes would be {total} bytes ({', '.join(parts[:6])}), above the "
            f"server's response limit of {limit} bytes (--max-message-bytes); send fewer rows or shorter inputs",
        )
