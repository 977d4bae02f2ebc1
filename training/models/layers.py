"""Pieces several models share: the finite mask score and the RNN that reads each row backwards within
its own length.

Masked positions get MASKED_SCORE added, never -inf or a boolean mask: a fully masked row (the
attention of a padded query, a padding word's characters) then gives the same finite numbers in torch
and onnxruntime, where -inf gives NaN in one and 0 in the other.
"""

from __future__ import annotations

import torch
from torch import nn

MASKED_SCORE = -1e4


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """0/1 (or bool) mask -> additive bias of the same shape: 0 where 1, MASKED_SCORE where 0."""
    return (1.0 - mask.to(dtype)) * MASKED_SCORE


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `length` positions, leave its padding where it is. x: [B, T, ...]."""
    # Positions counted from the input itself, not arange(x.shape[1]): in a process that had already exported
    # a model, torch 2.13's exporter folded that arange to the example's length, and the graph failed in
    # onnxruntime at every other length ("GatherElements: out of range"; docs/translation-graphs.md).
    positions = torch.ones_like(x[:, :, 0], dtype=torch.long).cumsum(dim=1) - 1  # [B, T]: 0 .. T-1
    lengths = lengths.unsqueeze(1)  # [B, 1]
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, T]
    index = index.unsqueeze(-1).expand(-1, -1, x.shape[2])
    return torch.gather(x, 1, index)


def bidirectional_states(forward_rnn: nn.Module, backward_rnn: nn.Module, x: torch.Tensor, lengths: torch.Tensor
                         ) -> torch.Tensor:
    """[forward states ; backward states] [B, T, 2H] of right-padded x [B, T, E].

    Padding never changes a row's states: the forward RNN meets padding only after the real positions,
    and the backward RNN runs forward over the row reversed within its own length (its states are
    reversed back), so it too meets padding only at the end. Two plain RNNs instead of one
    bidirectional one, whose backward direction would start in the padding.
    """
    forward_states, _ = forward_rnn(x)
    backward_states, _ = backward_rnn(reverse_within_length(x, lengths))
    return torch.cat([forward_states, reverse_within_length(backward_states, lengths)], dim=-1)
