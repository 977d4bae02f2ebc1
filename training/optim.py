"""Which parameters weight decay applies to (after nanoGPT's `configure_optimizers`).

Decay pulls weights towards 0. That regularises matrices (Linear, RNN, convolution, attention weights:
parameters of 2 or more dimensions), but not:
- biases and LayerNorm gains/shifts (1-D): decaying a gain towards 0 shrinks the normalised signal and
  a bias towards 0 moves the unit's operating point; neither limits capacity;
- embedding tables (2-D, yet not matrices applied to every input): AdamW decays every row at every step
  while only the rows of the batch's tokens get gradients, so rare tokens' vectors shrink towards 0 for
  no reason of their own. A table tied to the output projection is still an embedding.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: [{matrices, weight_decay}, {biases, norms, embeddings, weight_decay 0}].

    Every parameter of the model is in exactly one group (a shared one once), in the model's order;
    both groups are always there, so an optimizer state dict keeps its shape whatever the model holds.
    """
    embedding_ids = {id(p) for module in model.modules() if isinstance(module, nn.Embedding)
                     for p in module.parameters(recurse=False)}
    decay, no_decay = [], []
    for parameter in model.parameters():  # each shared parameter once
        if parameter.dim() >= 2 and id(parameter) not in embedding_ids:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
