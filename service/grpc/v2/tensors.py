"""KServe V2 tensors <-> numpy: datatype names, raw little-endian bytes or typed `contents`.

Every problem is a RequestError (INVALID_ARGUMENT) naming the input, never a numpy message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
from seqserve.oip import grpc_service_pb2 as pb

from service.grpc.validation import RequestError

# V2 datatype <-> numpy dtype <-> field of InferTensorContents (BYTES is not served: no graph takes it).
DATATYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "BOOL": (np.dtype(np.bool_), "bool_contents"),
    "INT8": (np.dtype(np.int8), "int_contents"),
    "INT16": (np.dtype(np.int16), "int_contents"),
    "INT32": (np.dtype(np.int32), "int_contents"),
    "INT64": (np.dtype(np.int64), "int64_contents"),
    "UINT8": (np.dtype(np.uint8), "uint_contents"),
    "UINT16": (np.dtype(np.uint16), "uint_contents"),
    "UINT32": (np.dtype(np.uint32), "uint_contents"),
    "UINT64": (np.dtype(np.uint64), "uint64_contents"),
    "FP16": (np.dtype(np.float16), "fp32_contents"),
    "FP32": (np.dtype(np.float32), "fp32_contents"),
    "FP64": (np.dtype(np.float64), "fp64_contents"),
}
# onnxruntime's "tensor(int64)" names -> V2 datatypes.
ORT_TYPES = {
    "tensor(bool)": "BOOL", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
}


def v2_shape(dims: Sequence[Any]) -> list[int]:
    """onnxruntime dims (numbers, names for dynamic axes, None) as V2 dims (-1 for dynamic)."""
    return [int(d) if isinstance(d, int) else -1 for d in dims]


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def element_count(
    tensor: pb.ModelInferRequest.InferInputTensor, max_elements: int, empty_axes: frozenset[int] = frozenset()
) -> int:
    """The elements of the tensor's declared shape, refused if any dimension is negative or 0 (but
    `empty_axes`, see decode_input) or the count exceeds `max_elements`: checks of the shape alone, made
    before the call's inputs are compared with each other."""
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise _invalid(f"input {tensor.name!r}: shape {shape[:8]} has a negative dimension")
    # onnxruntime aborts the whole process (std::terminate) on an empty tensor in some kernels (the
    # GRU of the sentiment graphs, for one), so a tensor with no elements never reaches a session.
    if any(d == 0 and axis not in empty_axes for axis, d in enumerate(shape)):
        raise _invalid(f"input {tensor.name!r}: shape {shape[:8]} has no elements; every dimension must be >= 1")
    # Python integers: numpy's int64 product wraps (4 x 2**62 -> 0) and would let an empty payload pass.
    count = math.prod(shape)
    if count > max_elements:
        raise _invalid(f"input {tensor.name!r}: {count} elements exceeds the limit of {max_elements}")
    return count


def decode_input(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, max_elements: int,
    empty_axes: frozenset[int] = frozenset(),
) -> np.ndarray:
    """The input as an array. `empty_axes`: axes the model's own contract starts at length 0 (the
    cache axis of a decoder's key/value cache before the first step); only those may be 0."""
    if tensor.datatype not in DATATYPES:
        raise _invalid(f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported")
    dtype, field = DATATYPES[tensor.datatype]
    shape = list(tensor.shape)
    count = element_count(tensor, max_elements, empty_axes)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise _invalid(
                f"input {tensor.name!r}: {len(raw)} raw bytes, but shape {shape} of {tensor.datatype} "
                f"needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise _invalid(f"input {tensor.name!r}: {len(values)} values in contents, but shape {shape} needs {count}")
    return np.asarray(values, dtype=dtype).reshape(shape)


def encode_output(name: str, array: np.ndarray) -> tuple[pb.ModelInferResponse.InferOutputTensor, bytes]:
    datatype = next((k for k, (dtype, _) in DATATYPES.items() if dtype == array.dtype), None)
    if datatype is None:
        raise TypeError(f"output {name}: dtype {array.dtype} has no V2 datatype")
    tensor = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=list(array.shape))
    return tensor, np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
