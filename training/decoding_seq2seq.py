"""Batched greedy decoding in torch for the seq2seq-attention and ConvS2S models: dev scores during training.

The served decoder (greedy, beam, streaming over onnxruntime) lives in service/; this one only scores a
few hundred dev verses every evaluation, through the same encode -> decode_step contract the exported
graphs follow (both models have it: memory and a state dict in, log-probs and the next state out).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from tokenizers import Tokenizer

from training.decoding import max_output_length
from training.decoding import translate as translate_with
from training.models.convs2s import ConvS2S
from training.models.seq2seq_attention import Seq2SeqAttention

State = dict[str, torch.Tensor]


class StepModel(Protocol):
    """What greedy decoding needs: seq2seq-attention and ConvS2S both have it (each with its own memory type)."""

    config: Any

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> tuple[Any, State]: ...

    def decode_step(self, token_ids: torch.Tensor, src_mask: torch.Tensor, memory: Any, state: State
                    ) -> tuple[torch.Tensor, State, torch.Tensor]: ...


@torch.no_grad()
def greedy_decode(model: StepModel, src_ids: torch.Tensor, src_mask: torch.Tensor,
                  max_length: int | None = None) -> list[list[int]]:
    """Token ids per row, without [BOS], cut before [EOS] (or at `max_length`)."""
    config = model.config
    batch = src_ids.shape[0]
    max_length = max_length or max_output_length(int(src_mask.sum(1).max()))
    memory, state = model.encode(src_ids, src_mask)
    tokens = torch.full((batch,), config.bos_id, dtype=torch.long, device=src_ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src_ids.device)
    steps = []
    for _ in range(max_length):
        log_probs, state, _ = model.decode_step(tokens, src_mask, memory, state)
        # Finished rows keep stepping in lockstep (fixed shapes) on pad tokens whose output is ignored.
        tokens = log_probs.argmax(-1).masked_fill(finished, config.pad_id)
        steps.append(tokens)
        finished |= tokens == config.eos_id
        if bool(finished.all()):
            break
    outputs = []
    for row in torch.stack(steps, dim=1).tolist():
        outputs.append(row[: row.index(config.eos_id)] if config.eos_id in row else row)
    return outputs


def translate(model: Seq2SeqAttention | ConvS2S, tokenizer: Tokenizer, texts: list[str], batch_size: int = 50
              ) -> list[str]:
    """Greedy translations in input order (the shared batching of training.decoding.translate)."""
    return translate_with(model, tokenizer, texts, batch_size, decode=greedy_decode)
