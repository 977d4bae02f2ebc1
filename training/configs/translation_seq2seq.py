"""Seq2seq-attention translation (English -> French) config: plain data, edited here, recorded beside the checkpoint.

Sizing (measured on the real length-filtered batches, 1 torch thread, 3,000-token batches, the other core
busy; an epoch is ~0.76M target tokens): embeddings 256 / bidirectional GRU 2x128 / decoder 256 (3.0M
parameters with the shared 8k joint vocabulary) ran at ~2,680 target tokens/s; 2x256 each way (3.7M) at
~2,080; 2x128 with input feeding at ~2,130; doubling the batch to 6,000 tokens did not go faster (~2,430).
The run uses 256 each way (the attention reads 512-wide states) without input feeding: ~6 minutes an
epoch, so ~12 epochs in 80 minutes. The 8k output softmax, not the RNNs, is most of a step's cost.
"""

import pathlib

from training.configs.checkpoints import checkpoint_dir
from training.configs.translation_transformer import LOOP as TRANSFORMER_LOOP
from training.data.translation import MAX_WORDS
from training.loop import LoopConfig

MODEL_NAME = "seq2seq-attention"
MAX_WORDS_TRAIN = MAX_WORDS  # the Transformer's filter: same data, same split
# The Transformer run's joint BPE, copied beside this checkpoint: both models read the same ids, so their
# scores compare tokenisation-for-tokenisation and the two exported versions can share one tokenizer.json.
SHARED_TOKENIZER = str(pathlib.Path(TRANSFORMER_LOOP.checkpoint_dir) / "tokenizer.json")
MODEL = {"embedding_dim": 256, "encoder_hidden": 256, "decoder_hidden": 256, "encoder_layers": 1,
         "decoder_layers": 1, "rnn_type": "gru", "attention": "general", "attention_dim": 256,
         "input_feeding": False, "tie_embeddings": True, "dropout": 0.3}
BATCH_TOKENS = 3000  # padded target tokens per batch: ~1.3 s a step, ~250 optimiser steps an epoch
LABEL_SMOOTHING = 0.1
DEV_SUBSET = 300  # the Transformer's fixed dev verses (same hash order), greedy-decoded each evaluation
EVAL_BATCH = 50
LOG_EVERY_STEPS = 50
LOOP = LoopConfig(
    max_epochs=30,
    learning_rate=2e-3,
    weight_decay=1e-4,
    warmup_steps=300,
    lr_schedule="inverse_sqrt",
    grad_clip=1.0,
    patience=3,  # epochs without a better dev chrF
    metric="chrf",
    seed=13,
    threads=1,
    checkpoint_dir=checkpoint_dir("translation-seq2seq"),  # SEQSERVE_CHECKPOINTS: keep it outside the clone
    evaluate_every_steps=500,  # besides each epoch's end: a curve point and a resumable checkpoint every ~10 minutes
)
