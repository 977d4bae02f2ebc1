"""SASRec on MovieLens-1M: plain data, edited here, recorded in the manifest."""

from training.loop import LoopConfig

MODEL_NAME = "sasrec-ml1m"
DATASET = "ml-1m"
# The usual ML-1M setup of the paper: histories of up to 200 items, d = 64, 2 blocks, 1 head.
MODEL = {"max_length": 200, "hidden_dim": 64, "num_blocks": 2, "num_heads": 1, "dropout": 0.2}
BATCH_SIZE = 32  # training windows (of up to 200 next-item predictions each) per step
# Users with more than max_length + 1 training items are cut into consecutive windows from the end
# (overlapping by one item), so every training interaction is predicted once; the paper keeps only the
# last window, which drops 34% of ML-1M's training interactions (1,549 users have more than 201).
ALL_WINDOWS = True
# "ce": softmax cross-entropy over all items at every position (Klenitskiy & Vasilev 2023); "bce": the
# paper's binary cross-entropy against one sampled negative (kept for the comparison in the docs).
LOSS = "ce"
NEGATIVES = 1  # uniform negatives per position for the "bce" / "ssm" loss terms
EVAL_BATCH_SIZE = 256
LOOP = LoopConfig(
    max_epochs=30,
    learning_rate=1e-3,
    weight_decay=0.0,
    warmup_steps=100,
    grad_clip=5.0,
    patience=5,
    metric="full_ndcg@10",  # dev NDCG@10 over the whole catalogue: what the service ranks, no sampling noise
    seed=13,
    threads=1,
    checkpoint_dir="checkpoints/sasrec-ml1m",
)
