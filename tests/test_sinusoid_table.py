"""The Transformer's sinusoid position table is the same on every CPU, and recovering an exported
Transformer from its graphs accepts a table that another CPU computed in float32 (the committed one was
exported on an AMD EPYC; float32 sin/cos on an AVX-512 Xeon differ by up to 3e-5) but refuses one that
is not a sinusoid table."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from exported_models import latest_version_dir

from bench.converters.version_weights import _graphs as version_graphs
from bench.converters.version_weights import (
    check_sinusoid_table,
    graph_parameters,
    torch_weights_source,
    transformer_from_graphs,
)
from training.models.transformer import sinusoid_table

HERE = pathlib.Path("a version folder")


def float64_reference(positions: int, width: int) -> np.ndarray:
    position = np.arange(positions, dtype=np.float64)[:, None]
    angles = position * np.exp(np.arange(0, width, 2, dtype=np.float64) * (-np.log(10000.0) / width))
    table = np.zeros((positions, width))
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


def test_the_table_is_the_float64_table_rounded_once_to_float32() -> None:
    table = sinusoid_table(1024, 256).numpy()
    assert table.dtype == np.float32
    # float64 sin/cos agree across libraries to ~1 ulp of float64, far below a float32 ulp: after one
    # rounding at most a rare value may land on the neighbouring float32.
    expected = float64_reference(1024, 256).astype(np.float32)
    assert np.abs(table - expected).max() <= np.spacing(np.float32(1.0))


def float32_table_of_another_cpu(positions: int, width: int) -> np.ndarray:
    """What a float32 evaluation computes (the argument rounded to float32 first), which is what the
    committed graphs hold, give or take the CPU's own sin/cos rounding."""
    position = np.arange(positions, dtype=np.float32)[:, None]
    frequency = np.exp(np.arange(0, width, 2, dtype=np.float32) * np.float32(-np.log(10000.0) / width))
    angles = (position * frequency).astype(np.float32)
    table = np.zeros((positions, width), dtype=np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


def test_a_float32_table_from_any_cpu_is_accepted() -> None:
    table = float32_table_of_another_cpu(1024, 256)
    # The point of the test: such a table is far from a fresh float32 one at 1e-6 (the old check).
    assert np.abs(table - sinusoid_table(1024, 256).numpy()).max() > 1e-6
    check_sinusoid_table(table, HERE)


@pytest.mark.parametrize("wrong", ["swapped", "other width", "shifted"])
def test_a_table_that_is_not_the_sinusoid_table_is_refused(wrong: str) -> None:
    table = sinusoid_table(1024, 256).numpy()
    if wrong == "swapped":
        table = table[:, ::-1].copy()
    elif wrong == "other width":
        table = np.repeat(sinusoid_table(1024, 128).numpy(), 2, axis=1)
    else:
        table = np.roll(table, 1, axis=0)
    with pytest.raises(ValueError, match="not a sinusoid table"):
        check_sinusoid_table(table, HERE)


def test_the_recovered_model_adds_exactly_the_graphs_table() -> None:
    version = latest_version_dir("transformer")
    from_graphs = next(graph_parameters(g)["positions.table"] for g in version_graphs(version)
                       if "positions.table" in graph_parameters(g))
    model = transformer_from_graphs(version)
    assert torch.equal(model.positions.table, torch.from_numpy(np.array(from_graphs, dtype=np.float32, copy=True)))


def test_the_torch_weights_of_a_seq2seq_version_are_a_checkpoint_a_fresh_clone_lacks(tmp_path: pathlib.Path) -> None:
    transformer = latest_version_dir("transformer")
    assert torch_weights_source(transformer) == transformer
    seq2seq = latest_version_dir("seq2seq-attention")
    assert torch_weights_source(seq2seq, tmp_path) == tmp_path / "best.pt"
    assert not torch_weights_source(seq2seq, tmp_path).exists()  # the bench skips that engine, saying why
