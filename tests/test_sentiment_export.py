"""torch -> ONNX export of the sentiment model: onnxruntime agrees with torch on real text.

Tolerance: 1e-5 absolute on probabilities and attention weights (float32; observed ~3e-8).
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from exported_models import SENTIMENT
from tokenizers import Tokenizer

from training.batching import pad_batch
from training.export.onnx_export import describe_io, export_onnx
from training.models.layers import reverse_within_length
from training.models.sentiment_classifier import (
    BiGRUAttentionClassifier,
    SentimentForExport,
    SentimentModelConfig,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
TEXTS = [
    "I loved this movie!!!",
    "The service was slow, the food cold, and the staff rude. Never again.",
    "Gas prices rose 3% in October.",
    "meh",
    "Café crème à Paris 😀 — not bad at all, though the view was better than the coffee.",
    "WORST. PURCHASE. EVER. :(",
    "The committee will meet on Tuesday to discuss the budget and the schedule for next year.",
]


def test_reverse_within_length_keeps_padding_in_place() -> None:
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]).unsqueeze(-1)
    out = reverse_within_length(x, torch.tensor([3, 2])).squeeze(-1)
    assert out.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


def test_padding_does_not_change_a_texts_result() -> None:
    torch.manual_seed(0)
    model = BiGRUAttentionClassifier(SentimentModelConfig(vocab_size=50, dropout=0.0)).eval()
    alone_ids, alone_mask = pad_batch([[5, 6, 7]], 0)
    batch_ids, batch_mask = pad_batch([[5, 6, 7], list(range(1, 20))], 0)
    with torch.no_grad():
        alone, alone_att = model(alone_ids, alone_mask)
        batched, batched_att = model(batch_ids, batch_mask)
    torch.testing.assert_close(alone[0], batched[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone_att[0], batched_att[0, :3], atol=1e-6, rtol=0)
    assert batched_att[0, 3:].abs().max() < 1e-6


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    tokenizer = Tokenizer.from_file(str(SENTIMENT / "tokenizer.json"))
    torch.manual_seed(1)
    model = BiGRUAttentionClassifier(SentimentModelConfig(vocab_size=tokenizer.get_vocab_size())).eval()
    wrapper = SentimentForExport(model).eval()
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    ids, mask = pad_batch([e.ids for e in tokenizer.encode_batch(TEXTS[:2])], 0)
    onnx_model = export_onnx(
        wrapper, (ids, mask), path, ["input_ids", "attention_mask"], ["probabilities", "attention"],
        axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
              "probabilities": {0: "batch"}, "attention": {0: "batch", 1: "sequence"}},
    )
    return tokenizer, wrapper, path, onnx_model


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_onnxruntime_matches_torch(exported, batch_size: int) -> None:
    tokenizer, wrapper, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for start in range(0, len(TEXTS), batch_size):
        texts = TEXTS[start : start + batch_size]
        ids, mask = pad_batch([e.ids for e in tokenizer.encode_batch(texts)], 0)
        with torch.no_grad():
            torch_probs, torch_attention = wrapper(ids, mask)
        ort_probs, ort_attention = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        np.testing.assert_allclose(ort_probs, torch_probs.numpy(), atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(ort_attention, torch_attention.numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.slow
def test_exported_graph_has_named_dynamic_axes(exported) -> None:
    *_, onnx_model = exported
    onnx.checker.check_model(onnx_model)
    io = describe_io(onnx_model)
    assert io["inputs"] == [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]},
    ]
    assert io["outputs"] == [
        {"name": "probabilities", "dtype": "float32", "shape": ["batch", 3]},
        {"name": "attention", "dtype": "float32", "shape": ["batch", "sequence"]},
    ]


@pytest.mark.slow
def test_onnxruntime_sees_the_dynamic_output_shapes(exported) -> None:
    *_, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.shape for o in session.get_outputs()] == [["batch", 3], ["batch", "sequence"]]
