"""Seq2seq with Luong local-p attention (English -> French): seq2seq-attention v1's recipe, span changed.

Everything but the attention span is v1's (training/configs/translation_seq2seq.py and the `training`
section of exported/seq2seq-attention/1/manifest.json): data, split, length filter, joint BPE, batch of
3,000 target tokens, optimiser, schedule, seed, dev subset and evaluation every 500 steps, so the two
dev-chrF curves compare step for step. The window half width D = 8 source tokens (sigma 4): Luong et
al. used D = 10 on WMT English-German.
"""

import dataclasses
import pathlib

from training.configs import translation_seq2seq as v1
from training.configs.checkpoints import checkpoint_dir

MODEL_NAME = "seq2seq-local"
MAX_WORDS_TRAIN = v1.MAX_WORDS_TRAIN
# v1's joint BPE: the Transformer run's tokenizer.json as committed beside seq2seq-attention v1 (the same
# bytes, sha256 f51b48d1...), since that run's checkpoint folder is not on every machine.
SHARED_TOKENIZER = str(pathlib.Path(__file__).resolve().parents[2] / "exported" / "seq2seq-attention" / "1"
                       / "tokenizer.json")
MODEL = {**v1.MODEL, "attention_span": "local-p", "local_window": 8}
BATCH_TOKENS = v1.BATCH_TOKENS
LABEL_SMOOTHING = v1.LABEL_SMOOTHING
DEV_SUBSET = v1.DEV_SUBSET
EVAL_BATCH = v1.EVAL_BATCH
LOG_EVERY_STEPS = v1.LOG_EVERY_STEPS
LOOP = dataclasses.replace(v1.LOOP, checkpoint_dir=checkpoint_dir("translation-seq2seq-local"))
