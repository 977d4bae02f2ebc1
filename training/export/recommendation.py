"""SASRec -> ONNX (batch and history length dynamic, history up to the model's max_length), and the
torch-vs-onnxruntime parity check that the manifest records and the tests repeat."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.pipelines.recommendation import WHOLE_HISTORY, pad_whole_histories
from training.export.onnx_export import export_onnx
from training.models.cooccurrence import CooccurrenceScores
from training.models.sasrec import SASRec, SASRecEnsemble, SASRecForExport, fold_item_features

INPUT_NAMES = ("history", "lengths")
OUTPUT_NAMES = ("scores", "attention")
AXES = {"history": {0: "batch", 1: "history_length"}, "lengths": {0: "batch"},
        WHOLE_HISTORY: {0: "batch", 1: "whole_history_length"},
        "scores": {0: "batch"}, "attention": {0: "batch", 1: "history_length"}}


def example_inputs(num_items: int, batch: int = 3, length: int = 7) -> tuple[torch.Tensor, ...]:
    """Right-padded histories of different lengths, and longer whole histories (sizes that differ from
    each other and from 1, so the exporter cannot mistake a dynamic axis for a constant)."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([length - 2 * i for i in range(batch)]).clamp(min=1)
    history = torch.randint(1, num_items + 1, (batch, length), generator=generator)
    history[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    whole = torch.randint(1, num_items + 1, (batch, length + 4), generator=generator)
    whole[torch.arange(length + 4)[None, :] >= lengths[:, None] + 4] = 0
    return history, lengths, whole


def export_sasrec(model: SASRec | SASRecEnsemble, path: pathlib.Path,
                  cooccurrence: CooccurrenceScores | None = None) -> onnx.ModelProto:
    """The graph of `model` (item features folded into the embedding), plus the co-occurrence term over
    a third input if one is given; `parity` checks it against the same modules in torch."""
    model.eval()
    served = fold_item_features(model) if isinstance(model, SASRec) else model
    inputs = example_inputs(model.config.num_items)
    names = INPUT_NAMES if cooccurrence is None else (*INPUT_NAMES, WHOLE_HISTORY)
    return export_onnx(SASRecForExport(served, cooccurrence), inputs[: len(names)], path,
                       input_names=names, output_names=OUTPUT_NAMES,
                       axes={k: v for k, v in AXES.items() if k in names or k in OUTPUT_NAMES})


def random_histories(num_items: int, lengths: Sequence[int], seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, num_items + 1, size=n).tolist() for n in lengths]


def parity(model: SASRec | SASRecEnsemble, onnx_path: pathlib.Path, batches: Sequence[Sequence[int]],
           seed: int = 0, cooccurrence: CooccurrenceScores | None = None) -> dict[str, float]:
    """Largest |torch - onnxruntime| over random right-padded batches (each a list of history lengths)
    for the scores and the attention, and whether the top-10 items agree everywhere. With a
    co-occurrence term, each row's whole history is its history after 30 more random items."""
    model.eval()
    exported = SASRecForExport(model, cooccurrence)
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
        feeds = {"history": padded, "lengths": length_array}
        if cooccurrence is not None:
            earlier = random_histories(model.config.num_items, [30] * len(lengths), seed + 1000 + batch_number)
            feeds[WHOLE_HISTORY] = pad_whole_histories([e + h for e, h in zip(earlier, histories, strict=True)])
        with torch.no_grad():
            torch_scores, torch_attention = (t.numpy() for t in exported(
                *(torch.from_numpy(feeds[name]) for name in feeds)))
        ort_scores, ort_attention = session.run(list(OUTPUT_NAMES), feeds)
        worst["max_abs_score_diff"] = max(worst["max_abs_score_diff"], float(np.abs(torch_scores - ort_scores).max()))
        worst["max_abs_attention_diff"] = max(worst["max_abs_attention_diff"],
                                              float(np.abs(torch_attention - ort_attention).max()))
        top_torch = np.argsort(-torch_scores, axis=1, kind="stable")[:, :10]
        top_ort = np.argsort(-ort_scores, axis=1, kind="stable")[:, :10]
        if not np.array_equal(top_torch, top_ort):
            worst["top10_equal"] = 0.0
    return worst
