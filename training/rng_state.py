"""The process's random number generators (Python, numpy, torch CPU) as one picklable value.

A resumed training run must draw the same random numbers as a run that never stopped (dropout masks,
negative sampling, any shuffling a batch list or loss function does with the global generators), so
the loop's checkpoints store these states and restore them.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

RngState = dict[str, Any]


def capture_rng() -> RngState:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(state: RngState) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def gather_from_ranks(value: Any) -> list[Any]:
    """Every rank's `value`, indexed by rank (a one-element list outside torchrun).

    Ranks draw different amounts of randomness (rank 0 alone evaluates; batches differ in shape), so
    each rank's generators are saved, not rank 0's for all.
    """
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
