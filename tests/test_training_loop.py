"""The shared training loop: DDP ranks stay in sync, batching is deterministic, training resumes."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from training.batching import bucketed_batches, pad_batch

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
def test_two_ddp_processes_split_the_data_and_stay_in_sync(tmp_path: pathlib.Path) -> None:
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
