"""Train the English -> French seq2seq-attention model:  OMP_NUM_THREADS=1 python -m training.train_seq2seq

Same data, split, length filter, dev subset, joint tokenizer and run (training/translation_run.py) as
the Transformer, so the two models' curves compare directly; the tokenizer is a copy of the
Transformer run's. Config: training/configs/translation_seq2seq.py. Export:
python -m training.export.translation_seq2seq.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
from collections.abc import Callable, Sequence

from tokenizers import Tokenizer

from training.configs import translation_seq2seq as cfg
from training.data.translation import TranslationPair
from training.decoding_seq2seq import translate
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.translation_run import TranslationRecipe, run

log = logging.getLogger("train_seq2seq")


def shared_tokenizer(shared: pathlib.Path) -> Callable[[pathlib.Path, Sequence[TranslationPair]], Tokenizer]:
    """A recipe's tokenizer loader: `shared` copied once into the checkpoint folder; a resumed run keeps
    its own copy (ids must not move)."""

    def load(checkpoint_dir: pathlib.Path, train_pairs: Sequence[TranslationPair]) -> Tokenizer:
        path = checkpoint_dir / "tokenizer.json"
        if not path.exists():
            if not shared.exists():
                raise SystemExit(f"{shared} is missing: start the Transformer run first (it trains the joint BPE)")
            shutil.copyfile(shared, path)
        elif shared.exists() and shared.read_bytes() != path.read_bytes():
            log.warning("%s differs from %s: the models no longer share a tokenizer", path, shared)
        return Tokenizer.from_file(str(path))

    return load


# The Transformer run's tokenizer.
load_shared_tokenizer = shared_tokenizer(pathlib.Path(cfg.SHARED_TOKENIZER))


RECIPE = TranslationRecipe(
    name="train_seq2seq", cfg=cfg, model_class=Seq2SeqAttention, config_class=Seq2SeqConfig,
    tokenizer=load_shared_tokenizer, tokenizer_setting=cfg.SHARED_TOKENIZER, translate=translate,
)


def main() -> None:
    run(RECIPE, description=__doc__)


if __name__ == "__main__":
    main()
