"""The user's translation pairs: a TSV (source<TAB>target, one pair a line) or two line-aligned files.

Everything wrong with the file is reported at once, with line numbers, before anything is trained
(training/byo/common.py DataFileError): a line that is not UTF-8, a TSV line without exactly two
columns, an empty source or target, a side too long for the served model to read, lengths so unequal
the lines are probably misaligned, two files of different line counts, too few pairs for a split.

Pairs are split 80/10/10 by their source text (the group): a sentence translated twice in the file
never lands in both train and test, where it would inflate the test score.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from training.byo.common import DataFileError, Problem, Split, split_examples, split_hashes

# Characters per side. The served model reads at most 256 subword tokens (training/export/
# translation_version.py MAX_SOURCE_TOKENS); 1,000 characters stay below that for byte-level BPE on
# common scripts, and a longer line is more likely a paragraph than a sentence.
MAX_CHARS = 1000
# Longer side / shorter side, in characters, for lines of at least RATIO_MIN_CHARS characters: a pair
# 12x longer on one side is almost always two files shifted against each other, not a translation
# (English number words -> digits, "seven hundred seventy seven" -> "777", is 9x).
MAX_LENGTH_RATIO = 12.0
RATIO_MIN_CHARS = 40
# 80/10/10 leaves 3 dev and 3 test pairs at 30: fewer cannot give a held-out score at all.
MIN_PAIRS = 30


@dataclass(frozen=True)
class TextPair:
    line: int     # 1-based line in the user's file(s)
    source: str
    target: str

    @property
    def key(self) -> str:
        """Identifies the pair by its text, not its line: the dev sample does not depend on file order."""
        return f"{self.source}\t{self.target}"


def _lines(path: pathlib.Path, problems: list[Problem], what: str = "") -> list[str | None]:
    """The file's lines without their line ends; None for a line that is not UTF-8 (reported)."""
    lines: list[str | None] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(Problem(number, f"{what}not UTF-8 (byte {exc.start + 1}: {raw[exc.start]:#04x})"))
            lines.append(None)
    if lines and lines[0] is not None and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]  # a byte-order mark is not text
    return lines


def _check_pair(line: int, source: str, target: str, problems: list[Problem],
                sides: tuple[str, str] = ("source", "target")) -> bool:
    """Appends this pair's problems; True if it has none. `sides` names the two sides in messages."""
    before = len(problems)
    for side, text in zip(sides, (source, target), strict=True):
        if not text.strip():
            problems.append(Problem(line, f"empty {side}"))
        elif len(text) > MAX_CHARS:
            problems.append(Problem(line, f"{side} is {len(text)} characters; at most {MAX_CHARS}"))
    if len(problems) == before:
        short, long = sorted((len(source.strip()), len(target.strip())))
        if long >= RATIO_MIN_CHARS and long > MAX_LENGTH_RATIO * short:
            problems.append(Problem(line, f"source has {len(source.strip())} characters and target "
                                          f"{len(target.strip())} (more than {MAX_LENGTH_RATIO:g}x apart): "
                                          "are the two sides aligned?"))
    return len(problems) == before


def read_tsv(path: pathlib.Path) -> list[TextPair]:
    """source<TAB>target lines; every line must have exactly two columns."""
    problems: list[Problem] = []
    pairs = []
    for number, line in enumerate(_lines(path, problems), start=1):
        if line is None:
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            problems.append(Problem(number, f"expected 2 tab-separated columns (source, target), found "
                                            f"{len(columns)}"))
            continue
        source, target = (c.strip() for c in columns)
        if _check_pair(number, source, target, problems):
            pairs.append(TextPair(number, source, target))
    return _enough(path, pairs, problems)


def read_aligned(source_path: pathlib.Path, target_path: pathlib.Path) -> list[TextPair]:
    """Line n of the source file is translated by line n of the target file."""
    problems: list[Problem] = []
    sources = _lines(source_path, problems)
    targets = _lines(target_path, problems, what=f"{target_path.name}: ")
    if len(sources) != len(targets):
        raise DataFileError(source_path, [Problem(0, f"{len(sources)} lines, but {target_path} has "
                                                     f"{len(targets)}: the two files must be line-aligned")])
    pairs = []
    sides = (f"source ({source_path.name})", f"target ({target_path.name})")
    for number, (source, target) in enumerate(zip(sources, targets, strict=True), start=1):
        if source is None or target is None:
            continue
        source, target = source.strip(), target.strip()
        if _check_pair(number, source, target, problems, sides):
            pairs.append(TextPair(number, source, target))
    return _enough(source_path, pairs, problems)


def _enough(path: pathlib.Path, pairs: list[TextPair], problems: list[Problem]) -> list[TextPair]:
    if not problems and len(pairs) < MIN_PAIRS:
        problems.append(Problem(0, f"{len(pairs)} pairs; at least {MIN_PAIRS} are needed for a train/dev/test "
                                   "split (80/10/10)"))
    if problems:
        raise DataFileError(path, problems)
    return pairs


def read_pairs(data: pathlib.Path, target_data: pathlib.Path | None) -> list[TextPair]:
    return read_tsv(data) if target_data is None else read_aligned(data, target_data)


def split_pairs(pairs: list[TextPair], path: pathlib.Path) -> tuple[Split[TextPair], dict[str, str]]:
    """The 80/10/10 split grouped by source text, and its record (sizes and hashes) for the manifest."""
    split = split_examples(pairs, key=lambda _, p: p.key, group=lambda p: p.source)
    empty = [name for name, part in split.parts().items() if not part]
    if empty:  # many pairs share few source texts: the groups cannot fill every part
        raise DataFileError(path, [Problem(0, f"{len({p.source for p in pairs})} distinct source texts leave "
                                              f"{' and '.join(empty)} empty; at least {MIN_PAIRS} are needed")])
    info = {**split_hashes(split, lambda p: [p.source, p.target]),
            **{f"{name}_size": str(len(part)) for name, part in split.parts().items()}}
    return split, info
