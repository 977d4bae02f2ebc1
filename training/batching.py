"""Deterministic length-bucketed batches: texts of similar length share a batch, so little padding."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, bucket_batches: int = 50) -> list[list[int]]:
    """Indices shuffled with `seed`, sorted by length inside buckets of `bucket_batches` batches, then
    the batches themselves shuffled; same seed -> same batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T] and the 0/1 attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, seed: int, bucket_items: int = 5000,
) -> list[list[int]]:
    """Batches of similar-length items whose padded size (items x longest length) stays <= max_tokens.

    Fixed-size batches waste compute on padding and swing from a few to thousands of tokens; a token
    budget keeps every step's cost (and gradient noise) about the same. Indices are shuffled with
    `seed`, sorted by length inside buckets of `bucket_items`, cut greedily, then the batches shuffled;
    same seed -> same batches. An item longer than the budget gets a batch of its own.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket_items):
        batch: list[int] = []
        longest = 0
        for index in sorted(order[start : start + bucket_items], key=lambda i: lengths[i]):
            if batch and max(longest, lengths[index]) * (len(batch) + 1) > max_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(index)
            longest = max(longest, lengths[index])
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches
