"""SASRec on MovieLens-1M: plain data, edited here, recorded in the manifest."""

from typing import Any

from training.configs.checkpoints import checkpoint_dir
from training.loop import LoopConfig

MODEL_NAME = "sasrec-ml1m"
DATASET = "ml-1m"
# The paper's ML-1M setup (histories of up to 200 items, 2 blocks, 1 head, dropout 0.2) at d = 256:
# version 3. Dev full NDCG@10 after the final phase below: d = 256 0.1986, d = 128 0.1905 (version 2,
# d = 128 without it: 0.1845; version 1, d = 64: 0.1745). docs/recommendation.md.
MODEL = {"max_length": 200, "hidden_dim": 256, "num_blocks": 2, "num_heads": 1, "dropout": 0.2}
BATCH_SIZE = 32  # training windows (of up to 200 next-item predictions each) per step
# Users with more than max_length + 1 training items are cut into consecutive windows from the end
# (overlapping by one item), so every training interaction is predicted once; the paper keeps only the
# last window, which drops 34% of ML-1M's training interactions (1,549 users have more than 201).
ALL_WINDOWS = True
# "ce": softmax cross-entropy over all items at every position (Klenitskiy & Vasilev 2023), plus "bce":
# the paper's binary cross-entropy against NEGATIVES uniformly drawn items per position (version 2; at
# d = 64 the extra term changed neither dev metric, see docs). Terms: SASRec.next_item_loss.
LOSS = "ce+bce"
NEGATIVES = 16
# Stochastic shared embeddings (SSE): each training history item is swapped for a random one with this
# probability (SASRec.next_item_loss). 0 = off (versions 1 and 2).
ITEM_NOISE = 0.0
EVAL_BATCH_SIZE = 256
# Version 4: SASRec's scores plus EASE item co-occurrence scores over the whole history (Steck 2019; low
# rank, training/models/cooccurrence.py), fit on the same training interactions. Chosen on dev with
# version 3's SASRec by `python -m training.evaluate.cooccurrence_grid`: the best full NDCG@10 among
# settings whose sampled HR@10 is not below SASRec's alone (docs/recommendation.md): SASRec alone 0.1986
# full NDCG@10 / 0.8545 sampled HR@10, with this term 0.2099 / 0.8690. None = SASRec alone.
# (keyword arguments of CooccurrenceConfig: ints and floats, so Any.)
COOCCURRENCE: dict[str, Any] | None = {"l2": 1000.0, "rank": 256, "weight": 3.0}
# Version 3 is two phases, both run by `python -m training.train_recommendation`. 1: LOOP below, a
# constant rate for 22 epochs (the version 3 run was stopped there by hand; its best dev epoch was 21).
# 2: FINAL_PHASE, from phase 1's best weights with a fresh optimizer, the rate decaying linearly to 0
# over its epochs, checkpoints in "<phase 1 dir>-decay", best dev epoch kept: +0.008 dev full NDCG@10
# at d = 256, +0.006 at d = 128 (docs/recommendation.md).
FINAL_PHASE = {"max_epochs": 6, "lr_schedule": "warmup_linear"}
LOOP = LoopConfig(
    max_epochs=22,  # version 2 (d = 128, no final phase) stopped early (patience) after epoch 32
    learning_rate=1e-3,
    weight_decay=0.0,
    warmup_steps=100,
    grad_clip=5.0,
    patience=5,
    metric="full_ndcg@10",  # dev NDCG@10 over the whole catalogue: what the service ranks, no sampling noise
    seed=13,
    threads=1,
    checkpoint_dir=checkpoint_dir("sasrec-ml1m-d256"),
)
