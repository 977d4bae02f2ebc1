"""Train the English -> French Transformer:  OMP_NUM_THREADS=1 python -m training.train_translation

The run itself (data, batching, loss, dev metrics, checkpoints, resuming) is training/translation_run.py,
shared with the seq2seq-attention run; this run trains the joint BPE that both models use. Config:
training/configs/translation_transformer.py. Export: python -m training.export.translation_transformer.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from tokenizers import Tokenizer

from training.configs import translation_transformer as cfg
from training.data.translation import TranslationPair
from training.decoding import translate
from training.models.transformer import Transformer, TransformerConfig
from training.tokenizer import train_joint_bpe
from training.translation_run import TranslationRecipe, run


def load_or_train_tokenizer(checkpoint_dir: pathlib.Path, train_pairs: Sequence[TranslationPair]) -> Tokenizer:
    path = checkpoint_dir / "tokenizer.json"
    if path.exists():  # resuming: the ids must mean what they meant
        return Tokenizer.from_file(str(path))
    tokenizer = train_joint_bpe([text for p in train_pairs for text in (p.source, p.target)],
                                vocab_size=cfg.TOKENIZER["vocab_size"], min_frequency=cfg.TOKENIZER["min_frequency"])
    tokenizer.save(str(path))
    return tokenizer


RECIPE = TranslationRecipe(
    name="train_translation", cfg=cfg, model_class=Transformer, config_class=TransformerConfig,
    tokenizer=load_or_train_tokenizer, tokenizer_setting=cfg.TOKENIZER, translate=translate,
)


def main() -> None:
    run(RECIPE, description=__doc__)


if __name__ == "__main__":
    main()
