"""Does step-by-step onnxruntime decoding reproduce the torch model? Used by the export (recorded in
the manifest) and by tests/test_translation_export.py.

Reference: the torch model's full-sequence, teacher-forced forward pass (no cache). Served path: the
encoder graph once, then the decoder-step graph per target position with the growing cache, through
service.pipelines.seq2seq_runtime (the code the server runs).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from service.pipelines.greedy import greedy_search
from service.pipelines.seq2seq_runtime import StepRunner
from service.runtime.version_loader import load_version
from training.batching import pad_batch
from training.decoding import source_ids
from training.models.convs2s import ConvS2S
from training.models.seq2seq_attention import Seq2SeqAttention
from training.models.transformer import Transformer

LOG_PROB_TOLERANCE = 1e-4  # absolute, on log-probs; fp32 reassociation differences are ~1e-6
PARITY_MAX_STEPS = 40

TranslationModel = Transformer | Seq2SeqAttention | ConvS2S
# training/decoding.py greedy_decode or training/decoding_seq2seq.py greedy_decode: (model, src, mask, max_length)
GreedyDecode = Callable[..., list[list[int]]]


def stepwise_log_probs(runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray,
                       tgt_in: np.ndarray) -> np.ndarray:
    """[B, T, V] log-probs of the step graph fed tgt_in[:, t] at step t (teacher forcing)."""
    state = runner.encode(src_ids, src_mask)
    steps = []
    for t in range(tgt_in.shape[1]):
        log_probs, _, state = runner.step(tgt_in[:, t], state)
        steps.append(log_probs)
    return np.stack(steps, axis=1)


def teacher_forced_difference(model: TranslationModel, runner: StepRunner, sources: Sequence[Sequence[int]],
                              targets: Sequence[Sequence[int]]) -> float:
    """Max |torch - onnxruntime| log-prob over the real (unpadded) target positions.

    targets are [BOS] ... ids; rows may differ in length (right padded on both sides).
    """
    pad = model.config.pad_id
    src, src_mask = pad_batch(sources, pad)
    tgt, tgt_mask = pad_batch(targets, pad)
    with torch.no_grad():
        reference = torch.log_softmax(model(src, src_mask, tgt, tgt_mask), dim=-1).numpy()
    served = stepwise_log_probs(runner, src.numpy(), src_mask.numpy(), tgt.numpy())
    real = tgt_mask.numpy().astype(bool)
    return float(np.abs(reference - served)[real].max())


def greedy_matches(model: TranslationModel, runner: StepRunner, sources: Sequence[Sequence[int]], max_steps: int,
                   greedy_decode: GreedyDecode) -> bool:
    """Torch greedy (the model's own training/decoding*.py) and the served greedy produce the same tokens."""
    src, src_mask = pad_batch(sources, model.config.pad_id)
    reference = greedy_decode(model, src, src_mask, max_length=max_steps)
    served = greedy_search(runner, src.numpy(), src_mask.numpy(), np.full(len(sources), max_steps))
    return reference == [h.token_ids for h in served]


def check_parity(model: TranslationModel, version_dir: pathlib.Path, texts: Sequence[str],
                 greedy_decode: GreedyDecode) -> dict[str, Any]:
    """Torch full-sequence vs onnxruntime step-by-step on `texts`, for the manifest; exits on failure.

    Teacher-forces the torch model's own greedy output: realistic target prefixes.
    """
    runner = StepRunner(load_version(version_dir))
    tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    sources = source_ids(tokenizer, list(texts))
    src, src_mask = pad_batch(sources, model.config.pad_id)
    targets = [[model.config.bos_id, *row]
               for row in greedy_decode(model, src, src_mask, max_length=PARITY_MAX_STEPS)]
    difference = teacher_forced_difference(model, runner, sources, targets)
    matches = greedy_matches(model, runner, sources, PARITY_MAX_STEPS, greedy_decode)
    if difference > LOG_PROB_TOLERANCE or not matches:
        raise SystemExit(f"export parity failed: max log-prob difference {difference:.2e}, greedy equal {matches}")
    return {"max_abs_log_prob_difference": difference, "tolerance": LOG_PROB_TOLERANCE,
            "greedy_tokens_equal": matches, "texts": len(texts)}
