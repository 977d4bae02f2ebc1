"""The emoji and emoticon table a classification version ships (service/pipelines/text_replacements.py).

Emoji names come from the `emoji` package (a training-only dependency; the table is data, so serving
does not need it): its English CLDR short name for every emoji and emoji sequence it knows, fully
qualified or not, with the skin-tone words dropped (a skin tone says nothing about sentiment; "thumbs up:
medium skin tone" is "thumbs up"). Emoticons are our list of common ASCII ones, named like the emoji
that mean the same, so ":(" and "☹" read alike.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

FILE_NAME = "text_replacements.json"

# Common Western and Eastern ASCII emoticons -> the emoji name of the same face. Left out on purpose:
# ones that are mostly something else in everyday text ("8)" a list item, ":3" a time, "D:" a drive,
# "):" and "(:" the end of a bracket before a colon: "(see above):").
EMOTICONS = {
    ":)": "slightly smiling face", ":-)": "slightly smiling face", "=)": "slightly smiling face",
    ":]": "slightly smiling face", ":))": "smiling face",
    ":D": "grinning face", ":-D": "grinning face", "=D": "grinning face", "XD": "grinning squinting face",
    "xD": "grinning squinting face", ";)": "winking face", ";-)": "winking face", ";D": "winking face",
    ":(": "frowning face", ":-(": "frowning face", "=(": "frowning face", ":[": "frowning face",
    ":((": "frowning face", ":'(": "crying face", ":'-(": "crying face",
    ":,(": "crying face", "T_T": "loudly crying face", ";_;": "loudly crying face",
    ":P": "face with tongue", ":-P": "face with tongue", ":p": "face with tongue", ":-p": "face with tongue",
    ";P": "winking face with tongue", ":/": "confused face", ":-/": "confused face", ":\\": "confused face",
    ":S": "confused face", ":|": "neutral face", ":-|": "neutral face", "-_-": "expressionless face",
    ":O": "face with open mouth", ":-O": "face with open mouth", ":o": "face with open mouth",
    ":*": "kissing face", ":-*": "kissing face", "^_^": "smiling face with smiling eyes",
    "^^": "smiling face with smiling eyes", "<3": "red heart", "<33": "red heart", "</3": "broken heart",
    ">:(": "angry face", ">:-(": "angry face", ":@": "angry face", "o_O": "face with raised eyebrow",
    "O_o": "face with raised eyebrow", "¯\\_(ツ)_/¯": "person shrugging",
}

_SKIN_TONE = re.compile(r"[_:]*(?:light|medium-light|medium|medium-dark|dark)_skin_tone")


def emoji_names() -> dict[str, str]:
    """Every emoji the `emoji` package knows -> its name in words ("face with tears of joy")."""
    import emoji  # training-only dependency

    names = {}
    for symbol, data in emoji.EMOJI_DATA.items():
        words = _SKIN_TONE.sub("", data["en"]).strip(":").replace("_", " ").strip(" ,")
        # a skin-tone modifier on its own keeps its name: an empty replacement would hide that it was there
        names[symbol] = " ".join((words or data["en"].strip(":").replace("_", " ")).split())
    return names


def build_table() -> dict[str, Any]:
    import emoji

    return {"source": f"emoji=={emoji.__version__} English short names (skin tones dropped) and "
                      "training/export/text_replacements.py EMOTICONS",
            "emoji": emoji_names(), "emoticons": dict(EMOTICONS)}


def write_table(path: pathlib.Path) -> None:
    """The table as JSON at `path` (a version folder's FILE_NAME)."""
    path.write_text(json.dumps(build_table(), ensure_ascii=False, indent=0, sort_keys=True) + "\n",
                    encoding="utf-8")
