"""Train the English -> French ConvS2S model:  OMP_NUM_THREADS=1 python -m training.train_convs2s

Same data, split, length filter, dev subset, joint tokenizer and run (training/translation_run.py) as
the Transformer and the GRU seq2seq model, so the curves compare directly; the tokenizer is a copy of
the one committed with the Transformer. Config: training/configs/translation_convs2s.py. Export:
python -m training.export.translation_convs2s.
"""

from __future__ import annotations

import pathlib

from training.configs import translation_convs2s as cfg
from training.decoding_seq2seq import translate
from training.models.convs2s import ConvS2S, ConvS2SConfig
from training.train_seq2seq import shared_tokenizer
from training.translation_run import TranslationRecipe, run

load_shared_tokenizer = shared_tokenizer(pathlib.Path(cfg.SHARED_TOKENIZER))


RECIPE = TranslationRecipe(
    name="train_convs2s", cfg=cfg, model_class=ConvS2S, config_class=ConvS2SConfig,
    tokenizer=load_shared_tokenizer, tokenizer_setting=cfg.SHARED_TOKENIZER, translate=translate,
)


def main() -> None:
    run(RECIPE, description=__doc__)


if __name__ == "__main__":
    main()
