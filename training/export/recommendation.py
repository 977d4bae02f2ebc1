"""SASRec -> ONNX (batch and history length dynamic, history up to the model's max_length), and the
torch-vs-onnxruntime parity check that the manifest records and the tests repeat."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.export.onnx_export import export_onnx
from training.models.sasrec import SASRec, SASRecEnsemble, SASRecForExport, fold_item_features

INPUT_NAMES = ("history", "lengths")
OUTPUT_NAMES = ("scores", "attention")
AXES = {"history": {0: "batch", 1: "history_length"}, "lengths": {0: "batch"},
        "scores": {0: "batch"}, "attention": {0: "batch", 1: "history_length"}}


def example_inputs(num_items: int, batch: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded histories of different lengths (sizes that differ from each other and from 1, so
    the exporter cannot mistake a dynamic axis for a constant)."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([length - 2 * i for i in range(batch)]).clamp(min=1)
    history = torch.randint(1, num_items + 1, (batch, length), generator=generator)
    history[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return history, lengths


def export_sasrec(model: SASRec | SASRecEnsemble, path: pathlib.Path) -> onnx.ModelProto:
    """The graph of `model` (item features folded into the embedding); `parity` checks it against `model`."""
    model.eval()
    served = fold_item_features(model) if isinstance(model, SASRec) else model
    return export_onnx(SASRecForExport(served), example_inputs(model.config.num_items), path,
                       input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, axes=AXES)


def random_histories(num_items: int, lengths: Sequence[int], seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, num_items + 1, size=n).tolist() for n in lengths]


def parity(model: SASRec | SASRecEnsemble, onnx_path: pathlib.Path, batches: Sequence[Sequence[int]],
           seed: int = 0) -> dict[str, float]:
    """Largest |torch - onnxruntime| over random right-padded batches (each a list of history lengths)
    for the scores and the attention, and whether the top-10 items agree everywhere."""
    model.eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    worst = {"max_abs_score_diff": 0.0, "max_abs_attention_diff": 0.0, "top10_equal": 1.0}
    for batch_number, lengths in enumerate(batches):
        histories = random_histories(model.config.num_items, lengths, seed + batch_number)
        padded = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
        for row, history in enumerate(histories):
            padded[row, : len(history)] = history
        length_array = np.asarray(lengths, dtype=np.int64)
        with torch.no_grad():
            torch_scores, torch_attention = (t.numpy() for t in SASRecForExport(model)(
                torch.from_numpy(padded), torch.from_numpy(length_array)))
        ort_scores, ort_attention = session.run(list(OUTPUT_NAMES), {"history": padded, "lengths": length_array})
        worst["max_abs_score_diff"] = max(worst["max_abs_score_diff"], float(np.abs(torch_scores - ort_scores).max()))
        worst["max_abs_attention_diff"] = max(worst["max_abs_attention_diff"],
                                              float(np.abs(torch_attention - ort_attention).max()))
        top_torch = np.argsort(-torch_scores, axis=1, kind="stable")[:, :10]
        top_ort = np.argsort(-ort_scores, axis=1, kind="stable")[:, :10]
        if not np.array_equal(top_torch, top_ort):
            worst["top10_equal"] = 0.0
    return worst
