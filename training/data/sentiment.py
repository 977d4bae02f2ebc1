"""VADER's human-rated sentiment ground truth (Hutto & Gilbert, ICWSM 2014), three classes.

23,703 sentences in four domains (tweets, movie reviews, Amazon reviews, NYT editorials), each scored
-4..+4 as the mean of >= 20 raters. It ships only in the vaderSentiment 3.3.2 source distribution, as a
tar inside the tar.

Label mapping (documented in docs/sentiment.md): mean <= -0.5 -> negative, mean >= +0.5 -> positive,
otherwise neutral. Half a point on a nine-point scale is where raters, on average, lean one way; with
a 0.05 cut almost no sentence is neutral (232 of 23,703) and the task collapses to two classes.

Split: per domain, sentences are ordered by sha256(domain/id) and cut 80/10/10, so the split is
stratified by domain, deterministic, and independent of file order.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from training.data.packages import sha256_bytes, source_distribution

REQUIREMENT = "vaderSentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
INNER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
DOMAINS = {
    "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    "movies": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    "amazon": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    "nyt": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
}
LABELS = ("negative", "neutral", "positive")
NEUTRAL_BAND = 0.5
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Sentence:
    domain: str
    id: str
    text: str
    score: float  # mean human rating, -4..+4

    @property
    def label(self) -> int:
        return score_to_label(self.score)


def score_to_label(score: float) -> int:
    if score <= -NEUTRAL_BAND:
        return 0
    if score >= NEUTRAL_BAND:
        return 2
    return 1


def read_ground_truth() -> tuple[list[Sentence], str]:
    """All sentences, and the sha256 of the raw ground-truth files (the data hash)."""
    with tarfile.open(source_distribution(REQUIREMENT, SDIST_NAME)) as outer:
        member = outer.extractfile(INNER_TAR)
        assert member is not None
        inner_bytes = member.read()
    sentences: list[Sentence] = []
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for domain, name in DOMAINS.items():
            handle = inner.extractfile(name)
            assert handle is not None
            raw = handle.read()
            digest.update(raw)
            for line in raw.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                sentence_id, score, text = line.split("\t", 2)
                sentences.append(Sentence(domain, sentence_id, text.strip(), float(score)))
    return sentences, digest.hexdigest()


class Keyed(Protocol):
    @property
    def domain(self) -> str: ...

    @property
    def id(self) -> str: ...


K = TypeVar("K", bound=Keyed)


def split_by_domain(items: list[K], domains: Iterable[str]) -> dict[str, list[K]]:
    """Per domain, items ordered by sha256("<domain>/<id>") and cut 80/10/10: sentences here, whole
    documents in training/data/documents.py (the same rule, so both splits are reproducible the same way)."""
    parts: dict[str, list[K]] = {"train": [], "dev": [], "test": []}
    for domain in domains:
        ordered = sorted((i for i in items if i.domain == domain),
                         key=lambda i: hashlib.sha256(f"{i.domain}/{i.id}".encode()).hexdigest())
        n_train = round(len(ordered) * SPLIT_FRACTIONS[0])
        n_dev = round(len(ordered) * SPLIT_FRACTIONS[1])
        parts["train"] += ordered[:n_train]
        parts["dev"] += ordered[n_train : n_train + n_dev]
        parts["test"] += ordered[n_train + n_dev :]
    return parts


def split(sentences: list[Sentence]) -> dict[str, list[Sentence]]:
    return split_by_domain(sentences, DOMAINS)


def split_hashes(parts: dict[str, list[Sentence]]) -> dict[str, str]:
    """sha256 of each split's (domain, id, label) list: changes if membership or labelling changes."""
    return {
        name: sha256_bytes(json.dumps([[s.domain, s.id, s.label] for s in rows]).encode())
        for name, rows in parts.items()
    }


def load_splits() -> tuple[dict[str, list[Sentence]], dict[str, str]]:
    sentences, data_sha256 = read_ground_truth()
    parts = split(sentences)
    info = {"data_sha256": data_sha256, **{f"{k}_sha256": v for k, v in split_hashes(parts).items()}}
    info.update({f"{k}_size": str(len(v)) for k, v in parts.items()})
    return parts, info
