"""The shared training loop: DDP ranks stay in sync, batching is deterministic, training resumes."""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from training.batching import bucketed_batches, pad_batch
from training.loop import LoopConfig, TrainResult, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_bucketed_batches_are_deterministic_and_cover_every_item_once() -> None:
    lengths = [(i * 37) % 50 + 1 for i in range(1000)]
    first = bucketed_batches(lengths, batch_size=32, seed=5)
    assert first == bucketed_batches(lengths, batch_size=32, seed=5)
    assert first != bucketed_batches(lengths, batch_size=32, seed=6)
    assert sorted(i for batch in first for i in batch) == list(range(1000))


def test_bucketed_batches_group_similar_lengths() -> None:
    lengths = [(i * 37) % 50 + 1 for i in range(3200)]
    batches = bucketed_batches(lengths, batch_size=32, seed=1)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 5  # unsorted batches of 32 from 1..50 would spread ~45


def test_pad_batch_right_pads_and_masks() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.slow
def test_two_ddp_processes_split_the_data_stay_in_sync_and_resume_exactly(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # --standalone: torchrun picks a free rendezvous port itself (a fixed port can clash on CI).
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "ddp_worker.py"), str(tmp_path)],
        env=env, cwd=REPO, timeout=300, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"], "weights diverged across ranks"
    assert ranks[0]["moved"] > 1e-4, "no training happened"
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) > 0
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"]), "ranks trained on the same sentences"
    assert (tmp_path / "ckpt" / "last.pt").exists()
    # Both ranks crashed at step 3 and resumed from the step-2 checkpoint: each trains its remaining batches
    # once and ends where the uninterrupted run ended.
    for rank in ranks:
        assert rank["resumed_seen"] == rank["seen"][len(rank["seen"]) // 3:]
        torch.testing.assert_close(torch.tensor(rank["resumed_weights"]), torch.tensor(rank["weights"]),
                                   rtol=1e-5, atol=1e-6)


# A tiny model whose training draws on every generator the loop must restore: the batch order is shuffled
# with Python's, the loss adds numpy noise, dropout uses torch's, and evaluation draws from Python's.
BATCHES_PER_EPOCH = 6


class Crash(RuntimeError):
    pass


def _tiny_run(checkpoint_dir: pathlib.Path, crash_at_call: int = 0, max_steps: int = 0,
              legacy_checkpoint: bool = False) -> tuple[TrainResult, nn.Module, list[list[int]]]:
    generator = torch.Generator().manual_seed(3)
    inputs, targets = torch.randn(48, 5, generator=generator), torch.randn(48, 1, generator=generator)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    trained: list[list[int]] = []

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        order = list(range(len(inputs)))
        random.shuffle(order)
        return [order[i : i + 8] for i in range(0, len(order), 8)]

    def loss_fn(module: nn.Module, batch: list[int]) -> tuple[torch.Tensor, int]:
        if crash_at_call and len(trained) + 1 == crash_at_call:
            raise Crash
        trained.append(batch)
        noise = torch.from_numpy(np.random.normal(0.0, 0.1, (len(batch), 1)).astype(np.float32))
        return nn.functional.mse_loss(module(inputs[batch]), targets[batch] + noise), len(batch)

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        return {"macro_f1": random.random()}

    config = LoopConfig(max_epochs=2, evaluate_every_steps=2, patience=10, max_steps=max_steps,
                        checkpoint_dir=str(checkpoint_dir), learning_rate=1e-2)
    result = train(model, batches_for_epoch, loss_fn, evaluate_fn, config)
    return result, model, trained


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("crash_at_call", [3, 6, 8])
def test_a_run_that_crashes_and_resumes_takes_the_same_steps_to_the_same_weights(
        tmp_path: pathlib.Path, crash_at_call: int) -> None:
    straight, straight_model, straight_batches = _tiny_run(tmp_path / "straight")
    assert straight.steps == len(straight_batches) == 2 * BATCHES_PER_EPOCH

    with pytest.raises(Crash):
        _tiny_run(tmp_path / "crashed", crash_at_call=crash_at_call)
    resumed, resumed_model, resumed_batches = _tiny_run(tmp_path / "crashed")
    # The last checkpoint before the crash was at an even step (evaluate_every_steps=2).
    checkpoint_step = (crash_at_call - 1) // 2 * 2
    assert resumed.steps == straight.steps
    assert resumed_batches == straight_batches[checkpoint_step:]  # same batches, same order, none repeated
    torch.testing.assert_close(_weights(resumed_model), _weights(straight_model), rtol=1e-5, atol=1e-6)


def test_a_step_budget_that_ends_mid_epoch_continues_that_epoch(tmp_path: pathlib.Path) -> None:
    first, _, first_batches = _tiny_run(tmp_path / "run", max_steps=3)
    assert first.steps == 3
    rest, _, rest_batches = _tiny_run(tmp_path / "run")
    assert rest.steps == 2 * BATCHES_PER_EPOCH  # not 3 + a whole second epoch
    assert len(first_batches) + len(rest_batches) == 2 * BATCHES_PER_EPOCH


def test_a_checkpoint_written_before_exact_resume_still_resumes_at_its_step(tmp_path: pathlib.Path) -> None:
    with pytest.raises(Crash):
        _tiny_run(tmp_path / "run", crash_at_call=BATCHES_PER_EPOCH + 4)  # last checkpoint: step 8, mid-epoch 1
    last = tmp_path / "run" / "last.pt"
    saved = torch.load(last, weights_only=False)
    # The old format: no position in the epoch and only torch's generator.
    del saved["state"]["epoch_batches_done"]
    torch_rng = saved.pop("rng")[0]["now"]["torch"]
    torch.save({**saved, "torch_rng": torch_rng}, last)
    resumed, _, resumed_batches = _tiny_run(tmp_path / "run")
    assert resumed.steps == 2 * BATCHES_PER_EPOCH
    assert len(resumed_batches) == 2 * BATCHES_PER_EPOCH - 8
