"""Emoji and emoticons made visible to a model whose vocabulary has no symbols for them: each is replaced
by its name in words before tokenising ("😍" -> " smiling face with heart-eyes ", ":(" -> " frowning face ").

A pre-trained WordPiece vocabulary (the MiniLM's) maps every emoji to [UNK], so "😍😍😍" and "😭😭😭" read
the same; their names are words the encoder already knows. The table is a JSON file shipped in the version
folder (made at export from the `emoji` package, training/export/text_replacements.py), so serving needs no
new dependency and a version reads text exactly as it was trained.

Offsets stay the user's: `normalise` also returns, per character of the rewritten text, the span of the
original text it came from, and `original_span` maps a token's offsets back through it. Every subword of
a replaced name points at the emoji or emoticon it replaced.

Matching: emoji are matched longest first at any position (a skin tone or a ZWJ sequence is one emoji);
an emoticon only where it stands apart (":/" inside "http://" or ":P" inside ":Paris" is left alone).
"""

from __future__ import annotations

import json
import pathlib
import re
from dataclasses import dataclass

# An emoticon ends where no letter, digit or slash follows (":)" ok, ":Paris" and "http://" not), and
# one that starts with a letter ("XD") must not follow a letter or digit.
_EMOTICON_AFTER = r"(?![A-Za-z0-9/\\])"
_EMOTICON_BEFORE_LETTER = r"(?<![A-Za-z0-9])"
_EMOTICON_BEFORE_SYMBOL = r"(?<![:;=/\\<>])"


def _ranges(code_points: list[int]) -> str:
    """A regex character class body of sorted code points as ranges (a class of ~1,400 single
    characters is scanned one by one at every position: 10x slower on plain text)."""
    parts = []
    i = 0
    while i < len(code_points):
        j = i
        while j + 1 < len(code_points) and code_points[j + 1] == code_points[j] + 1:
            j += 1
        first, last = re.escape(chr(code_points[i])), re.escape(chr(code_points[j]))
        parts.append(first if i == j else f"{first}-{last}")
        i = j + 1
    return "".join(parts)


@dataclass(frozen=True)
class Normalised:
    text: str
    # starts[i], ends[i]: the span of the original text that character i of `text` came from
    starts: list[int]
    ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """A span of the rewritten text (a token's offsets) as a span of the original text."""
        if end <= start:  # an empty span (a token the pipeline inserted) stays where it points
            position = self.starts[start] if start < len(self.starts) else (self.ends[-1] if self.ends else 0)
            return position, position
        return self.starts[start], self.ends[end - 1]


class TextReplacements:
    """The version's table: emoji -> name, emoticon -> name."""

    def __init__(self, emoji: dict[str, str], emoticons: dict[str, str]) -> None:
        self.emoji = emoji
        self.emoticons = emoticons
        self.longest_emoji = max((len(key) for key in emoji), default=0)
        # Every character that can start an emoji: one character-class search finds the candidates
        # quickly (a 4,000-way alternation would be tried at every position of every text).
        starts = _ranges(sorted({ord(key[0]) for key in emoji}))
        self._emoji_start = re.compile(f"[{starts}]") if starts else None
        ordered = sorted(emoticons, key=len, reverse=True)
        alternatives = [(_EMOTICON_BEFORE_LETTER if key[0].isalnum() else _EMOTICON_BEFORE_SYMBOL) + re.escape(key)
                        for key in ordered]
        # The leading class lets the regex engine skip most positions at once instead of trying every
        # alternative (and its lookbehind) there.
        first = "".join(sorted({re.escape(key[0]) for key in ordered}))
        self._emoticon = (re.compile(f"(?=[{first}])(?:" + "|".join(alternatives) + ")" + _EMOTICON_AFTER)
                          if ordered else None)

    @classmethod
    def from_file(cls, path: pathlib.Path) -> TextReplacements:
        """Refuses a table that is not {"emoji": {str: str}, "emoticons": {str: str}} with non-empty words."""
        data = json.loads(path.read_text(encoding="utf-8"))
        tables = {}
        for key in ("emoji", "emoticons"):
            table = data.get(key) if isinstance(data, dict) else None
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) and v.strip() for k, v in table.items()
            ):
                raise ValueError(f"{path.name}: '{key}' must map non-empty strings to non-empty words")
            tables[key] = table
        return cls(tables["emoji"], tables["emoticons"])

    def _matches(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, name) of every emoji and emoticon, in order, not overlapping."""
        found: list[tuple[int, int, str]] = []
        if self._emoji_start is not None:
            position = 0
            while (hit := self._emoji_start.search(text, position)) is not None:
                start = hit.start()
                for length in range(min(self.longest_emoji, len(text) - start), 0, -1):
                    name = self.emoji.get(text[start : start + length])
                    if name is not None:
                        found.append((start, start + length, name))
                        position = start + length
                        break
                else:
                    position = start + 1
        if self._emoticon is not None:
            emoji_spans = list(found)  # few per text; an emoticon inside an emoji sequence is not one
            for hit in self._emoticon.finditer(text):
                if not any(s < hit.end() and hit.start() < e for s, e, _ in emoji_spans):
                    found.append((hit.start(), hit.end(), self.emoticons[hit.group()]))
        return sorted(found)

    def normalise(self, text: str) -> Normalised:
        """The text with every emoji and emoticon replaced by " name ", and where each character came from."""
        pieces: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        position = 0
        for start, end, name in self._matches(text):
            pieces.append(text[position:start])
            starts += range(position, start)
            ends += range(position + 1, start + 1)
            replacement = f" {name} "
            pieces.append(replacement)
            starts += [start] * len(replacement)
            ends += [end] * len(replacement)
            position = end
        pieces.append(text[position:])
        starts += range(position, len(text))
        ends += range(position + 1, len(text) + 1)
        return Normalised("".join(pieces), starts, ends)
