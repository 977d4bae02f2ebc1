"""Transformer translation (English -> French) config: plain data, edited here, recorded beside the checkpoint.

Sizing (measured, 1 torch thread, synthetic 30-token batches): d256 / 3+3 layers / ff1024 (7.6M
parameters with the 8k joint vocabulary) trains at ~1,080 target tokens/s on a free core; an epoch of
the length-filtered data is ~0.76M target tokens, ~12 minutes alone, 2-3x longer when the cores are
shared. 10 epochs fit in ~2-2.5 hours alone.
"""

from training.configs.checkpoints import checkpoint_dir
from training.data.translation import MAX_WORDS
from training.loop import LoopConfig

MODEL_NAME = "transformer"
MAX_WORDS_TRAIN = MAX_WORDS  # both sides <= 40 words: see training/data/translation.py
TOKENIZER = {"vocab_size": 8000, "min_frequency": 2}
MODEL = {"d_model": 256, "num_heads": 4, "d_ff": 1024, "encoder_layers": 3, "decoder_layers": 3, "dropout": 0.1}
# Padded target tokens per batch. ~2.3 s a step alone; small enough for ~300 optimiser steps an epoch,
# which a Transformer needs more than it needs large batches when training time is the limit.
BATCH_TOKENS = 2500
LABEL_SMOOTHING = 0.1
DEV_SUBSET = 300  # fixed dev verses scored each evaluation (greedy, cached): keeps an eval well under a minute
EVAL_BATCH = 50
LOG_EVERY_STEPS = 50  # a "step / loss / tokens/s / lr" log line, independent of tqdm
LOOP = LoopConfig(
    max_epochs=10,
    learning_rate=1e-3,
    weight_decay=1e-4,
    warmup_steps=400,
    lr_schedule="inverse_sqrt",
    grad_clip=1.0,
    patience=3,  # epochs without a better dev chrF
    metric="chrf",
    seed=13,
    threads=1,
    checkpoint_dir=checkpoint_dir("translation-transformer"),  # SEQSERVE_CHECKPOINTS: keep it outside the clone
    evaluate_every_steps=250,  # a learning-curve point and a resumable checkpoint every ~10-20 minutes
)
