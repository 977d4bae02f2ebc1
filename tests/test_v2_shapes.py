"""The shape rules of service/grpc/v2/shapes.py and the V2 batcher's row estimate, without a server.

(This module imports no V2 proto, so it can share a pytest process with the tritonclient tests.)
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from exported_models import SENTIMENT

from service.grpc.v2.graph_batching import GraphPipeline, Row
from service.grpc.v2.shapes import call_positions, check_agreement, check_positions, row_positions
from service.grpc.validation import RequestError

GRAPH = {"ids": ["batch", "sequence"], "mask": ["batch", "sequence"], "lengths": ["batch"]}


def refusal(shapes: dict[str, list[int]], namings: dict[str, list[list]]) -> str:
    with pytest.raises(RequestError) as error:
        check_agreement(shapes, namings)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return str(error.value)


def test_agreeing_shapes_pass_and_fixed_or_unnamed_dims_are_not_compared() -> None:
    check_agreement({"ids": [2, 5], "mask": [2, 5], "lengths": [2]}, {k: [v] for k, v in GRAPH.items()})
    check_agreement({"a": [2, 5, 3], "b": [2, 7, 4]}, {"a": [["batch", 5, None]], "b": [["batch", 7, None]]})


def test_a_disagreement_names_both_inputs_the_dimension_and_both_sizes() -> None:
    message = refusal({"ids": [2, 5], "mask": [2, 5], "lengths": [3]}, {k: [v] for k, v in GRAPH.items()})
    assert message == ("inputs 'ids' and 'lengths' disagree on dimension 'batch': 2 (axis 0 of 'ids') vs 3 "
                       "(axis 0 of 'lengths'); every input must give a named dimension the same size")
    assert "dimension 'sequence': 5 (axis 1 of 'ids') vs 4" in refusal(
        {"ids": [2, 5], "mask": [2, 4]}, {k: [v] for k, v in GRAPH.items()})


def test_each_naming_source_is_checked_on_its_own() -> None:
    # The manifest calls both axes "src_len"; the graph's own names differ: the manifest's rule still holds.
    namings = {"a": [["batch", "src_len"], ["batch", "a_len"]], "b": [["batch", "src_len"], ["batch", "b_len"]]}
    check_agreement({"a": [1, 3], "b": [1, 3]}, namings)
    assert "dimension 'src_len'" in refusal({"a": [1, 3], "b": [1, 4]}, namings)
    # An input without a manifest spec is checked under the graph's names alone.
    namings = {"a": [["batch", "x"], ["batch", "x"]], "b": [["batch", "x"]]}
    assert "dimension 'x'" in refusal({"a": [1, 3], "b": [1, 4]}, namings)


def test_positions_count_rows_times_named_dims_past_the_batch_axis() -> None:
    assert row_positions([7, 5, 64], ["batch", "sequence", 64]) == 5
    assert row_positions([7], ["batch"]) == 1
    dims = {"keys": ["batch", 4, "cache", 64], "tokens": ["batch"]}
    assert call_positions({"keys": [3, 4, 10, 64], "tokens": [3]}, dims) == ("keys", 30)
    check_positions({"keys": [3, 4, 10, 64], "tokens": [3]}, dims, limit=30)
    with pytest.raises(RequestError, match=r"'keys': shape \[3, 4, 10, 64\] spans 30 positions .* limit is 29"):
        check_positions({"keys": [3, 4, 10, 64], "tokens": [3]}, dims, limit=29)
    # Shapes beyond int64 do not wrap around to a small count.
    assert call_positions({"keys": [2, 4, 2**63, 64]}, dims)[1] == 2**64


def test_a_v2_row_counts_its_positions_against_the_batchers_token_budget() -> None:
    """Rows used to count 1 token each, so 32 one-row calls of length L stacked into one run of 32 x L
    positions whatever the model's batch_token_budget; now a row counts its length."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(SENTIMENT / "model.onnx"), options, providers=["CPUExecutionProvider"])
    pipeline = GraphPipeline(model=None, session=session)  # type: ignore[arg-type]  # only the session is read
    row = Row({"input_ids": np.ones((1, 700), np.int64), "attention_mask": np.ones((1, 700), np.int64)},
              ("probabilities",))
    assert pipeline.estimate_tokens(row) == 700
