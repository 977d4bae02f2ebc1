"""Hypothesis strategies that build ANY protobuf request message from its descriptor.

Generic on purpose: every field of every request of every service is covered, including services
added later, with hostile values (any Unicode, empty and oversized lists, extreme numbers, NaN and
infinities), and the fields that name things (model, tensor, datatype, version) draw from a mix of
real names and noise so the fuzzer also gets past the first checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Texts: short any-Unicode, or near the 2000-character limit (both sides of it).
TEXT = st.one_of(st.text(max_size=40), st.text(max_size=3, min_size=1).map(lambda s: s * 700))


def _int(low: int, high: int) -> st.SearchStrategy[int]:
    # Small values hit the branches (0, -1, off by one); the extremes hit overflow.
    return st.one_of(st.integers(-3, 70).filter(lambda v: low <= v <= high), st.integers(low, high),
                     st.sampled_from([low, high]))


def scalar(field: FieldDescriptor, hints: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    if field.name in hints:
        return hints[field.name]
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    low, high = INT_RANGES[kind]
    return _int(low, high)


@st.composite
def message(draw: st.DrawFn, descriptor: Descriptor, hints: Mapping[str, st.SearchStrategy[Any]],
            depth: int = 0) -> Message:
    result = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if depth > 3 or not draw(st.booleans()):
            continue  # unset, as proto3 clients often leave a field
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name
            key_field, value_field = entry["key"], entry["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = draw(scalar(key_field, hints))
                if value_field.message_type is not None:
                    getattr(result, field.name)[key].CopyFrom(draw(message(value_field.message_type, hints, depth + 1)))
                else:
                    getattr(result, field.name)[key] = draw(scalar(value_field, hints))
        elif field.is_repeated:
            size = draw(st.one_of(st.integers(0, 4), st.sampled_from([0, 63, 64, 65, 100])))
            if field.message_type is not None:
                for _ in range(min(size, 6)):  # nested messages: a few are enough to reach every check
                    getattr(result, field.name).add().CopyFrom(draw(message(field.message_type, hints, depth + 1)))
            else:
                getattr(result, field.name).extend(draw(st.lists(scalar(field, hints), min_size=size, max_size=size)))
        elif field.message_type is not None:
            getattr(result, field.name).CopyFrom(draw(message(field.message_type, hints, depth + 1)))
        else:
            setattr(result, field.name, draw(scalar(field, hints)))
    return result


def names(real: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list(real)), st.just(""), TEXT)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input as a V2 client sees it: name, V2 datatype, dims (ints fixed, strings named)."""

    name: str
    datatype: str
    dims: tuple[int | str, ...]


def shared_dims(specs: Sequence[TensorSpec]) -> list[str]:
    """Named dims that more than one input carries: the ones inputs can disagree on."""
    holders: dict[str, set[str]] = {}
    for spec in specs:
        for dim in spec.dims:
            if isinstance(dim, str):
                holders.setdefault(dim, set()).add(spec.name)
    return sorted(dim for dim, names in holders.items() if len(names) > 1)


@st.composite
def agreeing_shapes(draw: st.DrawFn, specs: Sequence[TensorSpec], high: int = 4) -> dict[str, list[int]]:
    """One size (1..high) per named dim, the same in every input that names it."""
    sizes = {dim: draw(st.integers(1, high)) for spec in specs for dim in spec.dims if isinstance(dim, str)}
    return {spec.name: [d if isinstance(d, int) else sizes[d] for d in spec.dims] for spec in specs}


@st.composite
def disagreeing_shapes(draw: st.DrawFn, specs: Sequence[TensorSpec], high: int = 4
                       ) -> tuple[dict[str, list[int]], str]:
    """(shapes, dim): every input's shape agrees with the others but on one shared named dim, which some
    (not all) of the inputs holding it get at another size. Every other dim, fixed or named, is right,
    so the disagreement is the only thing wrong with the call."""
    dim = draw(st.sampled_from(shared_dims(specs)))
    shapes = draw(agreeing_shapes(specs, high))
    holders = [spec for spec in specs if dim in spec.dims]
    size = shapes[holders[0].name][holders[0].dims.index(dim)]
    other = draw(st.integers(1, high + 1).filter(lambda s: s != size))
    moved = draw(st.lists(st.sampled_from(holders), min_size=1, max_size=len(holders) - 1, unique=True))
    for spec in moved:
        shapes[spec.name] = [other if d == dim else s for d, s in zip(spec.dims, shapes[spec.name], strict=True)]
    return shapes, dim
