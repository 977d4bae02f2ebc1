"""Raw text -> words with character offsets, the unit both NER taggers label.

Training and serving use this one function, so a tagger learns on exactly the words the service
will hand it. It is a `tokenizers` Split pre-tokenizer whose matches are the words: URLs, @mentions
and #hashtags whole; letters/digits with inner apostrophes (it's, O'Neil) as one word; every other
non-space character on its own, except that an emoji's zero-width joiners, variation selectors and
skin-tone modifiers stay attached to it (one word for a family emoji). Whitespace, however much, is
never part of a word.

Offsets are Python str code-point offsets into the raw text (what `text[start:end]` slices), which
is what `tokenizers` reports for pre-tokenization; an emoji outside the BMP is one code point.

A word never crosses whitespace, so on the WNUT data (gold tokens joined with single spaces) every
word lies inside exactly one gold token and gold tags project onto words without loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Regex, pre_tokenizers

WORD_PATTERN = (
    r"https?://\S+|www\.\S+"  # URLs, up to the next space
    r"|[@#][\w_]+"  # @mentions, #hashtags
    r"|\w+(?:['’]\w+)*"  # words, with inner apostrophes
    r"|[^\w\s](?:\x{200D}[^\w\s]|[\x{FE0E}\x{FE0F}\x{1F3FB}-\x{1F3FF}\x{20E3}])*"  # symbols, emoji sequences
)
_SPLITTER = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # code-point offset into the raw text
    end: int


def split_words(text: str) -> list[Word]:
    return [Word(piece, start, end) for piece, (start, end) in _SPLITTER.pre_tokenize_str(text)]
