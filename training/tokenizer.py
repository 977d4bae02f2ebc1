"""Subword tokenizers trained with the `tokenizers` library; the saved tokenizer.json is the one file
used by training, evaluation and serving alike."""

from __future__ import annotations

import json
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


def train_joint_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                    byte_fallback: bool = False) -> Tokenizer:
    """One cased BPE for source and target together (translation: the embeddings are shared).

    SentencePiece-style: spaces become "▁" and stay inside the tokens, punctuation is not split off,
    so the Metaspace decoder restores the original spacing exactly ("l'Éternel:" and "God's," come
    back as written), which sacreBLEU needs. Special tokens get fixed ids: [PAD] 0, [UNK] 1, [BOS] 2,
    [EOS] 3; they are added by the model code, not by the tokenizer.

    `byte_fallback` (the user's own language pair, training/byo/translation.py): a character the
    training text never had is spelled as its UTF-8 bytes, `<0x00>`..`<0xFF>` (ids 4-259, inside
    `vocab_size`), instead of [UNK], and the ByteFallback decoder joins the bytes back into the
    character. The committed English -> French tokenizer predates it and stays as it was.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=byte_fallback))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    metaspace = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    # ByteFallback first: it turns runs of byte tokens into text, then Metaspace restores the spaces.
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), metaspace]) if byte_fallback else metaspace
    specials = [PAD, UNK, BOS, EOS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS) if byte_fallback else vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return with_byte_tokens(tokenizer, specials) if byte_fallback else tokenizer


BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]


def with_byte_tokens(tokenizer: Tokenizer, specials: list[str]) -> Tokenizer:
    """The trained BPE with every `<0xNN>` byte token in its vocabulary, right after the special tokens.

    BpeTrainer never adds them (it learns characters, not bytes), and a BPE model with byte_fallback
    only falls back to byte tokens its vocabulary holds. They are ordinary vocabulary entries, not
    special tokens: decoding with skip_special_tokens=True (the server does) must keep them.
    """
    data = json.loads(tokenizer.to_str())
    trained = sorted(data["model"]["vocab"].items(), key=lambda item: item[1])
    order = [*specials, *BYTE_TOKENS, *(t for t, _ in trained if t not in specials and t not in BYTE_TOKENS)]
    data["model"]["vocab"] = {token: index for index, token in enumerate(order)}
    for added in data["added_tokens"]:
        added["id"] = data["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
