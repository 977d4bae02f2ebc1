"""Does step-by-step onnxruntime decoding reproduce the torch model? Used by the export (recorded in
the manifest) and by tests/test_translation_export.py.

Reference: the torch model's full-sequence, teacher-forced forward pass (no cache). Served path: the
encoder graph once, then the decoder-step graph per target position with the growing cache, through
service.pipelines.seq2seq_runtime (the code the server runs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from service.pipelines.greedy import greedy_search
from service.pipelines.seq2seq_runtime import StepRunner
from training.batching import pad_batch
from training.decoding import greedy_decode
from training.models.transformer import Transformer

LOG_PROB_TOLERANCE = 1e-4  # absolute, on log-probs; fp32 reassociation differences are ~1e-6


def stepwise_log_probs(runner: StepRunner, src_ids: np.ndarray, src_mask: np.ndarray,
                       tgt_in: np.ndarray) -> np.ndarray:
    """[B, T, V] log-probs of the step graph fed tgt_in[:, t] at step t (teacher forcing)."""
    state = runner.encode(src_ids, src_mask)
    steps = []
    for t in range(tgt_in.shape[1]):
        log_probs, _, state = runner.step(tgt_in[:, t], state)
        steps.append(log_probs)
    return np.stack(steps, axis=1)


def teacher_forced_difference(model: Transformer, runner: StepRunner, sources: Sequence[Sequence[int]],
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


def greedy_matches(model: Transformer, runner: StepRunner, sources: Sequence[Sequence[int]], max_steps: int) -> bool:
    """Torch greedy (training/decoding.py) and the served greedy produce the same tokens."""
    src, src_mask = pad_batch(sources, model.config.pad_id)
    reference = greedy_decode(model, src, src_mask, max_length=max_steps)
    served = greedy_search(runner, src.numpy(), src_mask.numpy(), np.full(len(sources), max_steps))
    return reference == [h.token_ids for h in served]
