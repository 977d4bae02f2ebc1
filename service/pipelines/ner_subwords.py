"""Words -> BERT subword ids with the position of each word's first subword (where its tag is read).

Shared by MiniLM fine-tuning and the served pipeline so both build identical inputs. Each word is
encoded on its own (no special tokens): the word boundaries are ours (service/pipelines/ner_words.py),
not BERT's pre-tokenizer's, and a word the normaliser empties (a lone zero-width joiner, a control
character) still gets one position, as [UNK], so every word has a tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass(frozen=True)
class SubwordRow:
    ids: list[int]  # [CLS] subwords... [SEP]
    first_positions: list[int]  # index into ids of each word's first subword (words that fit)
    truncated: bool  # some words did not fit in max_subwords and are not tagged


def prepare_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """The shipped tokenizer.json pads and truncates to 128; we encode single words, so neither."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {token} token (a BERT-family WordPiece tokenizer has)")
    return token_id


def encode_words(tokenizer: Tokenizer, words: Sequence[str], max_subwords: int) -> SubwordRow:
    """`max_subwords` counts [CLS] and [SEP]; words past it are left out (and the row flagged)."""
    cls_id, sep_id, unk_id = (special_id(tokenizer, t) for t in ("[CLS]", "[SEP]", "[UNK]"))
    ids, first_positions = [cls_id], []
    encodings = tokenizer.encode_batch(list(words), add_special_tokens=False) if words else []
    truncated = False
    for encoding in encodings:
        pieces = encoding.ids or [unk_id]
        if len(ids) + len(pieces) + 1 > max_subwords:
            truncated = True
            break
        first_positions.append(len(ids))
        ids.extend(pieces)
    ids.append(sep_id)
    return SubwordRow(ids, first_positions, truncated)
