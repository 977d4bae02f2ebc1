"""Subword tokenizers trained with the `tokenizers` library; the saved tokenizer.json is the one file
used by training, evaluation and serving alike."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK = "[PAD]", "[UNK]"


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Cased BPE over NFKC-normalised text (case carries sentiment: "GREAT" vs "great").

    Punctuation is split off (BERT pre-tokenisation) so "!!!" and ":)" become their own tokens.
    Characters never seen in training map to [UNK] instead of failing.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, UNK],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


BOS, EOS = "[BOS]", "[EOS]"
METASPACE = "▁"


def train_joint_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """One cased BPE for source and target together (translation: the embeddings are shared).

    SentencePiece-style: spaces become "▁" and stay inside the tokens, punctuation is not split off,
    so the Metaspace decoder restores the original spacing exactly ("l'Éternel:" and "God's," come
    back as written), which sacreBLEU needs. Special tokens get fixed ids: [PAD] 0, [UNK] 1, [BOS] 2,
    [EOS] 3; they are added by the model code, not by the tokenizer.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, UNK, BOS, EOS],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer
