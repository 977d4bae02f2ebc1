"""Batched greedy decoding in torch with the Transformer's key/value cache: dev scores during training.

The served decoder (greedy, beam, streaming over onnxruntime) lives in service/; this one only has to be
fast enough to score a few hundred dev verses every evaluation, and it exercises the same
encode -> cross_attention_cache -> decode_step contract the exported graphs follow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tokenizers import Tokenizer

from training.batching import pad_batch
from training.models.convs2s import ConvS2S
from training.models.seq2seq_attention import Seq2SeqAttention
from training.models.transformer import Transformer
from training.token_ids import special_id
from training.tokenizer import EOS


def max_output_length(src_length: int) -> int:
    """French runs ~1.05x the English token count; the slack covers the long tail."""
    return int(src_length * 1.5) + 10


@torch.no_grad()
def greedy_decode(model: Transformer, src_ids: torch.Tensor, src_mask: torch.Tensor,
                  max_length: int | None = None) -> list[list[int]]:
    """Token ids per row, without [BOS], cut before [EOS] (or at `max_length`)."""
    config = model.config
    batch = src_ids.shape[0]
    max_length = max_length or max_output_length(int(src_mask.sum(1).max()))
    cross = model.cross_attention_cache(model.encode(src_ids, src_mask))
    past = model.empty_cache(batch)
    tokens = torch.full((batch, 1), config.bos_id, dtype=torch.long, device=src_ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src_ids.device)
    steps = []
    for _ in range(max_length):
        logits, past, _ = model.decode_step(tokens, cross, src_mask, past)
        next_tokens = logits.argmax(-1).masked_fill(finished, config.pad_id)
        steps.append(next_tokens)
        finished |= next_tokens == config.eos_id
        if bool(finished.all()):
            break
        tokens = next_tokens[:, None]
    outputs = []
    for row in torch.stack(steps, dim=1).tolist():
        outputs.append(row[: row.index(config.eos_id)] if config.eos_id in row else row)
    return outputs


def source_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Source side as the model saw it in training: subword ids then [EOS]."""
    eos = special_id(tokenizer, EOS)
    return [[*enc.ids, eos] for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def translate(model: Transformer | Seq2SeqAttention | ConvS2S, tokenizer: Tokenizer, texts: list[str],
              batch_size: int = 50,
              decode: Callable[[Any, torch.Tensor, torch.Tensor], list[list[int]]] | None = None) -> list[str]:
    """Greedy translations in input order; batches hold similar source lengths, so little padding.

    `decode` is the model's batched greedy decoder (default: the Transformer's, above).
    """
    # Declared, not inferred from the default, so the one call below accepts either model.
    run: Callable[[Any, torch.Tensor, torch.Tensor], list[list[int]]] = decode or greedy_decode
    encoded = source_ids(tokenizer, texts)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_batch([encoded[i] for i in rows], model.config.pad_id)
        decoded = tokenizer.decode_batch(run(model, ids, mask), skip_special_tokens=True)
        for row, text in zip(rows, decoded, strict=True):
            outputs[row] = text
    return outputs
