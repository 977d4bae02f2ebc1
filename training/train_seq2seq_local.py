"""Train seq2seq with Luong local-p attention:  OMP_NUM_THREADS=1 python -m training.train_seq2seq_local

seq2seq-attention v1's run (training/train_seq2seq.py) with the local-p span
(training/configs/translation_seq2seq_local.py); its tokenizer is v1's committed joint BPE. Export:
python -m training.export.translation_seq2seq --checkpoint <its checkpoint dir> --name seq2seq-local ...
"""

from __future__ import annotations

import dataclasses
import pathlib

from training.configs import translation_seq2seq_local as cfg
from training.train_seq2seq import RECIPE as V1_RECIPE
from training.train_seq2seq import shared_tokenizer
from training.translation_run import run

RECIPE = dataclasses.replace(V1_RECIPE, name="train_seq2seq_local", cfg=cfg,
                             tokenizer=shared_tokenizer(pathlib.Path(cfg.SHARED_TOKENIZER)),
                             tokenizer_setting=cfg.SHARED_TOKENIZER)


def main() -> None:
    run(RECIPE, description=__doc__)


if __name__ == "__main__":
    main()
