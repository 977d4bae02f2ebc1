"""A tiny SASRec trained for a few steps on MovieLens-100K and exported through the real training and
export code: the recommendation tests run on it in seconds (the committed ML-1M model trains for an hour).

Its max_history is 20, so truncation is easy to provoke; 2 heads, so the attention is a real mean."""

from __future__ import annotations

import pathlib

from training.loop import LoopConfig
from training.train_recommendation import Trained, export_version, train_sasrec

NAME = "sasrec-tiny"
MAX_HISTORY = 20
MODEL = {"max_length": MAX_HISTORY, "hidden_dim": 16, "num_blocks": 2, "num_heads": 2, "dropout": 0.1}


def train_tiny(checkpoint_dir: pathlib.Path, steps: int = 30) -> Trained:
    loop = LoopConfig(max_epochs=1, learning_rate=5e-3, max_steps=steps, metric="full_ndcg@10",
                      checkpoint_dir=str(checkpoint_dir), patience=1)
    return train_sasrec("ml-100k", MODEL, loop, all_windows=True, batch_size=32)


def tiny_model_dir(root: pathlib.Path, evaluate: bool = False) -> tuple[pathlib.Path, Trained]:
    """`root` as a model directory holding `sasrec-tiny/1`, and what trained it."""
    trained = train_tiny(root / "checkpoints")
    models = root / "models"
    export_version(trained, models / NAME / "1", NAME, max_k=50, evaluate=evaluate)
    return models, trained
