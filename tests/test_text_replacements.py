"""Emoji and emoticons read as words before tokenising (service/pipelines/text_replacements.py), with
offsets that still point into the text as sent."""

from __future__ import annotations

import json
import pathlib

import pytest

from service.pipelines.text_replacements import TextReplacements
from training.export.text_replacements import FILE_NAME, write_table


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> TextReplacements:
    path = tmp_path_factory.mktemp("table") / FILE_NAME
    write_table(path)
    return TextReplacements.from_file(path)


def replaced(table: TextReplacements, text: str) -> str:
    return " ".join(table.normalise(text).text.split())


def test_emoji_become_their_names(table: TextReplacements) -> None:
    assert replaced(table, "😍😍😍") == "smiling face with heart-eyes " * 2 + "smiling face with heart-eyes"
    assert replaced(table, "I love🔥pizza") == "I love fire pizza"
    assert replaced(table, "😭") == "loudly crying face"


def test_a_sequence_is_one_emoji(table: TextReplacements) -> None:
    # a skin tone, a variation selector, a ZWJ family and a flag are each read whole, skin tone dropped
    assert replaced(table, "👍🏽") == "thumbs up"
    assert replaced(table, "❤️") == replaced(table, "❤") == "red heart"
    assert replaced(table, "👨‍👩‍👧") == "family man woman girl"
    assert replaced(table, "🇫🇷") == "France"


def test_emoticons_are_read_only_where_they_stand_apart(table: TextReplacements) -> None:
    assert replaced(table, "great :) but :( and :'(") == "great slightly smiling face but frowning face and crying face"
    assert replaced(table, "lol XD <3") == "lol grinning squinting face red heart"
    # a URL, a time, a word after a colon and a bracket before a colon are text, not faces
    for text in ("see http://example.com/a", "at 12:30", "re:Post :Paris", "f(x): (see above):", "item 8)"):
        assert replaced(table, text) == text


def test_offsets_map_back_to_the_original_text(table: TextReplacements) -> None:
    text = "so good 😍 :) ok"
    normalised = table.normalise(text)
    heart_eyes = normalised.text.index("heart-eyes")
    assert normalised.original_span(heart_eyes, heart_eyes + len("heart-eyes")) == (8, 9)  # the emoji itself
    smiling = normalised.text.index("slightly")
    assert normalised.original_span(smiling, smiling + len("slightly")) == (10, 12)  # ":)"
    ok = normalised.text.index("ok")
    assert text[slice(*normalised.original_span(ok, ok + 2))] == "ok"
    assert normalised.original_span(0, 2) == (0, 2)


def test_text_without_emoji_is_unchanged_and_maps_to_itself(table: TextReplacements) -> None:
    text = "The food was cold, 2 stars #fail ©"
    normalised = table.normalise(text)
    assert normalised.text.replace(" copyright ", "©") == text
    assert [normalised.original_span(i, i + 1) for i in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_a_broken_table_is_refused_naming_the_section(tmp_path: pathlib.Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_text(json.dumps({"emoji": {"😍": ""}, "emoticons": {}}), encoding="utf-8")
    with pytest.raises(ValueError, match="'emoji'"):
        TextReplacements.from_file(path)
    path.write_text(json.dumps({"emoji": {}}), encoding="utf-8")
    with pytest.raises(ValueError, match="'emoticons'"):
        TextReplacements.from_file(path)
