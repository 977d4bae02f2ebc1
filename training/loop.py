"""The one training loop every seqserve model uses.

Plain-data config, seeded, tqdm progress, dev-set early stopping, resumable checkpoints, and data
parallel training under `torchrun --nproc_per_node N` (DDP over gloo on CPU). A model plugs in with
two functions: `loss_fn(model, batch) -> (loss, n_items)` and `evaluate_fn(model) -> dict` (on rank 0;
the dict must hold `config.metric`, higher is better).

A checkpoint resumes at the exact step: it records the position within the epoch and every rank's
Python/numpy/torch generator states (now, and when the epoch's batch list was built), so a run that
crashes and resumes trains the same batches in the same order to the same weights as one that did not
(tests/test_training_loop.py, also under torchrun). Before, a mid-epoch checkpoint replayed its epoch
from the first batch (6 batches, checkpoint every 2, crash at batch 3: 8 steps instead of 6).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, TypedDict

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.optim import decay_groups
from training.rng_state import RngState, capture_rng, gather_from_ranks, restore_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    max_epochs: int = 20
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    patience: int = 3  # epochs without dev improvement before stopping
    metric: str = "macro_f1"
    seed: int = 13
    threads: int = 1  # torch intra-op threads per process: 1 is fastest when anything else runs
    checkpoint_dir: str = "checkpoints/run"
    max_steps: int = 0  # stop after this many optimiser steps (0: no limit); used by smoke tests
    evaluate_every_steps: int = 0  # also evaluate mid-epoch (0: once per epoch)
    # "warmup_constant": linear warmup over warmup_steps, then constant; "inverse_sqrt": the same warmup,
    # then lr * sqrt(warmup_steps / step) (Vaswani et al.), which needs no planned number of steps;
    # "warmup_linear": the same warmup, then linear decay to 0 at the end of max_epochs (the BERT
    # fine-tuning schedule: a constant rate keeps a fine-tuned encoder's dev score oscillating).
    lr_schedule: str = "warmup_constant"


@dataclass
class TrainResult:
    best_metric: float
    best_epoch: int
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


class LoopState(TypedDict):
    """The loop's position and early-stopping record, saved as a plain dict in last.pt's "state"."""

    epoch: int
    step: int
    # batches of the current epoch already trained on, over all ranks; a checkpoint written mid-epoch
    # resumes at the next one, not at the epoch's first batch.
    epoch_batches_done: int
    best_metric: float
    best_epoch: int
    bad_epochs: int
    history: list[dict[str, Any]]
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def distributed_context() -> tuple[int, int]:
    """(rank, world_size); initialises gloo when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world_size


def build_once(path: pathlib.Path, build: Callable[[pathlib.Path], None]) -> None:
    """Rank 0 builds `path` if it is missing; every rank waits until it exists.

    For artefacts every rank must share, such as the tokenizer: BPE training is not guaranteed to
    give identical merges in separate processes, and ranks with different vocabularies would train
    different models under one set of weights.
    """
    rank, _ = distributed_context()
    if rank == 0 and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build(path)
    if dist.is_initialized():
        dist.barrier()


def _broadcast_flag(flag: bool) -> bool:
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([1 if flag else 0])
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def train(
    model: nn.Module,
    batches_for_epoch: Callable[[int], Sequence[Any]],
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, int]],
    evaluate_fn: Callable[[nn.Module], dict[str, float]],
    config: LoopConfig,
    extra_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train with early stopping; the best weights end up in `<checkpoint_dir>/best.pt`.

    `batches_for_epoch(epoch)` returns the epoch's full (already shuffled, deterministic) batch list;
    each rank takes every world_size-th batch, trimmed so all ranks take the same number of steps.
    """
    torch.set_num_threads(config.threads)
    rank, world_size = distributed_context()
    seed_everything(config.seed)
    checkpoint_dir = pathlib.Path(config.checkpoint_dir)
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    # find_unused_parameters: multi-task models leave some heads idle on some batches.
    trainable = DistributedDataParallel(model, find_unused_parameters=True) if world_size > 1 else model
    optimizer = torch.optim.AdamW(decay_groups(model, config.weight_decay), lr=config.learning_rate)

    if config.lr_schedule not in ("warmup_constant", "inverse_sqrt", "warmup_linear"):
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}")
    planned_steps = config.max_epochs * (len(batches_for_epoch(0)) // world_size)

    def lr_factor(step: int) -> float:
        if config.lr_schedule == "inverse_sqrt" and config.warmup_steps and step + 1 > config.warmup_steps:
            return math.sqrt(config.warmup_steps / (step + 1))
        if config.lr_schedule == "warmup_linear" and step + 1 > config.warmup_steps:
            return max(0.0, (planned_steps - step) / max(1, planned_steps - config.warmup_steps))
        return min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    state: LoopState = {"epoch": 0, "step": 0, "epoch_batches_done": 0, "best_metric": -math.inf, "best_epoch": -1,
                        "bad_epochs": 0, "history": [], "seconds": 0.0}
    last_path = checkpoint_dir / "last.pt"
    # This rank's generators as the checkpoint left them, and as they were when the checkpoint's epoch
    # called batches_for_epoch (a batch list shuffled with the global generators is rebuilt in the same order).
    resume_rng: dict[str, RngState] | None = None
    if last_path.exists():
        saved = torch.load(last_path, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(_in_decay_groups(saved["optimizer"], model, optimizer))
        scheduler.load_state_dict(saved["scheduler"])
        state.update(saved["state"])
        if "rng" in saved:
            resume_rng = saved["rng"][rank % len(saved["rng"])]
        else:  # written before exact resume: only torch's generator and no position were kept
            torch.set_rng_state(saved["torch_rng"])
            state["epoch_batches_done"] = _legacy_epoch_batches_done(state, world_size)
        if rank == 0:
            log.info("resumed from %s at epoch %d batch %d step %d", last_path, state["epoch"],
                     state["epoch_batches_done"], state["step"])
    epoch_start_rng = capture_rng()

    def evaluate_and_checkpoint(epoch_done: bool) -> bool:
        """Evaluate on rank 0, keep the best weights, write a resumable checkpoint; True = stop."""
        stop = False
        if rank == 0:
            model.eval()
            with torch.no_grad():
                metrics = evaluate_fn(model)
            model.train()
            entry = {"epoch": state["epoch"], "step": state["step"], "seconds": round(state["seconds"], 1),
                     **metrics}
            state["history"].append(entry)
            improved = metrics[config.metric] > state["best_metric"]
            if improved:
                state["best_metric"] = metrics[config.metric]
                state["best_epoch"] = state["epoch"]
                state["bad_epochs"] = 0
                torch.save({"model": model.state_dict(), "extra": extra_state or {}, "metrics": entry},
                           checkpoint_dir / "best.pt")
            elif epoch_done:
                state["bad_epochs"] += 1
            log.info("eval %s%s", json.dumps(entry), " (best)" if improved else "")
            stop = state["bad_epochs"] >= config.patience
        # Captured after evaluation: a run that never stopped trains on from exactly these states.
        rng = gather_from_ranks({"now": capture_rng(), "epoch_start": epoch_start_rng})
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "state": state, "rng": rng}, last_path)
            (checkpoint_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
        return _broadcast_flag(stop)

    model.train()
    # A run resumed after early stopping already triggered, or after its step budget, must not train on.
    stopped = state["bad_epochs"] >= config.patience or bool(config.max_steps and state["step"] >= config.max_steps)
    while state["epoch"] < config.max_epochs and not stopped:
        epoch = state["epoch"]
        if resume_rng is not None:
            restore_rng(resume_rng["epoch_start"] if state["epoch_batches_done"] else resume_rng["now"])
        epoch_start_rng = capture_rng()
        all_batches = batches_for_epoch(epoch)
        if resume_rng is not None:
            restore_rng(resume_rng["now"])
            resume_rng = None
        per_rank = len(all_batches) // world_size
        mine = [all_batches[i * world_size + rank] for i in range(per_rank)]
        done = min(per_rank, state["epoch_batches_done"] // world_size)
        started = time.perf_counter()
        progress = tqdm(mine[done:], desc=f"epoch {epoch}", disable=rank != 0, mininterval=10, leave=False,
                        initial=done, total=per_rank)
        for batch in progress:
            loss, _ = loss_fn(trainable, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            done += 1
            state["epoch_batches_done"] = done * world_size
            progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # refresh on tqdm's own interval
            if config.max_steps and state["step"] >= config.max_steps:
                stopped = True
                break
            if config.evaluate_every_steps and state["step"] % config.evaluate_every_steps == 0:
                state["seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                if evaluate_and_checkpoint(epoch_done=False):
                    stopped = True
                    break
        state["seconds"] += time.perf_counter() - started
        # A step budget that runs out mid-epoch keeps the position, so a larger budget continues the epoch.
        epoch_done = done >= per_rank
        if epoch_done:
            state["epoch"] += 1
            state["epoch_batches_done"] = 0
        if evaluate_and_checkpoint(epoch_done=epoch_done):
            stopped = True
    return TrainResult(
        best_metric=state["best_metric"], best_epoch=state["best_epoch"], steps=state["step"],
        seconds=state["seconds"], history=state["history"],
    )


def _legacy_epoch_batches_done(state: LoopState, world_size: int) -> int:
    """The position in its epoch of a checkpoint that did not record one, from its history: the epoch
    started at the step of its first evaluation (the previous epoch's end-of-epoch entry, which carries
    the incremented epoch number); epoch 0 started at step 0."""
    epoch = state["epoch"]
    starts = [entry["step"] for entry in state["history"] if entry.get("epoch") == epoch]
    epoch_start = starts[0] if epoch and starts else 0
    return max(0, state["step"] - epoch_start) * world_size


def epochs_trained_evaluator() -> Callable[[nn.Module], dict[str, float]]:
    """evaluate_fn for a refit (training on train + dev), which has no held-out data left: it only counts
    epochs, so with refit_loop_config the loop keeps the last epoch's weights. The epoch count itself
    must come from an earlier run that was selected on dev."""
    calls = [0]

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        calls[0] += 1
        return {"epochs_trained": calls[0]}

    return evaluate_fn


def refit_loop_config(config: LoopConfig) -> LoopConfig:
    """The same config, trained for exactly max_epochs and keeping the last epoch (see above)."""
    return replace(config, metric="epochs_trained", patience=config.max_epochs + 1)


def config_dict(*configs: object) -> dict[str, Any]:
    """Merge dataclass configs into one plain dict for the manifest."""
    merged: dict[str, Any] = {}
    for config in configs:
        if not is_dataclass(config) or isinstance(config, type):
            raise TypeError(f"config_dict takes dataclass instances, got {config!r}")
        merged[type(config).__name__] = asdict(config)
    return merged


def _in_decay_groups(saved: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer state saved before decay groups (one group over model.parameters()) re-keyed for the
    two groups of decay_groups, so such a checkpoint still resumes with its Adam moments."""
    if len(saved["param_groups"]) == len(optimizer.param_groups):
        return saved
    old_order = [id(p) for p in model.parameters()]
    new_index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state = {new_index[old_order[int(k)]]: v for k, v in saved["state"].items()}
    template = saved["param_groups"][0]
    groups = [{**template, "weight_decay": g["weight_decay"], "params": [new_index[id(p)] for p in g["params"]]}
              for g in optimizer.param_groups]
    return {"state": state, "param_groups": groups}
