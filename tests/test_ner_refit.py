"""A refit trains a tagger on train + dev for a fixed number of epochs and keeps the last one: the
dev tweets reach the model (here: the BiLSTM-CRF's vocabulary), the test tweets never do."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from training.configs import ner as cfg
from training.data.ner import load_splits
from training.ner_bilstm_recipe import build_vocab
from training.train_ner import run_training

pytestmark = pytest.mark.slow  # trains a BiLSTM-CRF on the tweets


def test_a_refit_learns_from_dev_tweets_and_keeps_the_last_epoch(tmp_path: pathlib.Path) -> None:
    parts, _ = load_splits()
    config = dataclasses.replace(cfg.BILSTM_LOOP, max_epochs=2, checkpoint_dir=str(tmp_path / "refit"))
    recipe, result = run_training("bilstm-crf", parts, config, batch_size=64, refit=True)
    assert [entry["epochs_trained"] for entry in result.history] == [1, 2]
    assert result.best_epoch == 2  # the last epoch, whatever it would have scored on dev
    words = set(recipe.extra["vocab"]["words"])
    assert words == set(build_vocab(parts["train"] + parts["dev"])["words"])
    assert words != set(build_vocab(parts["train"])["words"])
    assert words != set(build_vocab(parts["train"] + parts["dev"] + parts["test"])["words"])
