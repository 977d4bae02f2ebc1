"""The HAN as one ONNX graph, and its torch-vs-onnxruntime parity.

Inputs input_ids and attention_mask [documents, sentences, words] (int64); outputs
document_probabilities [documents, labels], sentence_weights [documents, sentences],
sentence_probabilities [documents, sentences, labels], word_weights [documents, sentences, words].
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.export.onnx_export import export_onnx
from training.models.han import HanForExport, HierarchicalAttentionNetwork

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("document_probabilities", "sentence_weights", "sentence_probabilities", "word_weights")
AXES = {
    "input_ids": {0: "documents", 1: "sentences", 2: "words"},
    "attention_mask": {0: "documents", 1: "sentences", 2: "words"},
    "document_probabilities": {0: "documents"},
    "sentence_weights": {0: "documents", 1: "sentences"},
    "sentence_probabilities": {0: "documents", 1: "sentences"},
    "word_weights": {0: "documents", 1: "sentences", 2: "words"},
}
# Outputs are probabilities and weights in [0, 1]; float32 GRUs agree far closer than this across CPUs.
PARITY_TOLERANCE = 1e-4


def export_han(model: HierarchicalAttentionNetwork, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               path: pathlib.Path) -> onnx.ModelProto:
    model.eval()
    return export_onnx(HanForExport(model), (input_ids, attention_mask), path,
                       input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, axes=AXES)


def han_parity(model: HierarchicalAttentionNetwork, path: pathlib.Path, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> dict[str, Any]:
    """Largest absolute difference per output between torch and onnxruntime on real (unpadded) positions."""
    model.eval()
    with torch.no_grad():
        reference = [t.numpy() for t in HanForExport(model)(input_ids, attention_mask)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    served = session.run(list(OUTPUT_NAMES), {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
    mask = attention_mask.numpy().astype(bool)
    sentence_mask: np.ndarray = np.asarray(mask.any(axis=2))
    real = {"document_probabilities": np.ones(reference[0].shape, dtype=bool),
            "sentence_weights": sentence_mask,
            "sentence_probabilities": np.broadcast_to(sentence_mask[..., None], reference[2].shape),
            "word_weights": mask}
    differences = {name: float(np.abs(ref - got)[real[name]].max())
                   for name, ref, got in zip(OUTPUT_NAMES, reference, served, strict=True)}
    return {"max_abs_difference": differences, "documents": int(input_ids.shape[0]),
            "tolerance": PARITY_TOLERANCE, "passed": max(differences.values()) <= PARITY_TOLERANCE}
