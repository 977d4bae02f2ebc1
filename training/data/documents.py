"""VADER's Amazon reviews and NYT editorials as documents of human-rated sentences.

In `amazonReviewSnippets` and `nytEditorialSnippets` a sentence id is `doc_sentence` (`12_3`: the third
sentence of document 12): 300 reviews (3,708 sentences) and 498 editorials (5,190 sentences), every
sentence rated -4..+4 by >= 20 raters (training/data/sentiment.py reads the files).

Document label: the 3-class label of the mean of its sentences' human scores, with the sentence
model's thresholds (`score_to_label`: <= -0.5 negative, >= +0.5 positive, else neutral). No rater
scored whole documents, so the mean is the document's tone as the raters saw it sentence by sentence.

Split: by document (never a document's sentences on both sides), per domain ordered by
sha256(domain/doc) and cut 80/10/10; deterministic and independent of file order.

The served text of a document is its sentences joined with one space (`Document.text`), the form the
served pipeline splits back into sentences (service/pipelines/document.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from training.data.packages import sha256_bytes
from training.data.sentiment import Sentence, read_ground_truth, score_to_label, split_by_domain

DOCUMENT_DOMAINS = ("amazon", "nyt")
SENTENCE_SEPARATOR = " "


@dataclass(frozen=True)
class Document:
    domain: str
    id: str  # the `doc` part of the sentence ids
    sentences: tuple[Sentence, ...]  # in order of their sentence number

    @property
    def score(self) -> float:
        return sum(s.score for s in self.sentences) / len(self.sentences)

    @property
    def label(self) -> int:
        return score_to_label(self.score)

    @property
    def text(self) -> str:
        return SENTENCE_SEPARATOR.join(s.text for s in self.sentences)


def group_documents(sentences: list[Sentence]) -> list[Document]:
    """The documents of the two document domains, in file order, each with its sentences in order."""
    grouped: dict[tuple[str, str], list[Sentence]] = {}
    for sentence in sentences:
        if sentence.domain not in DOCUMENT_DOMAINS:
            continue
        doc_id, _, number = sentence.id.partition("_")
        if not number.isdigit():
            raise ValueError(f"{sentence.domain} sentence id {sentence.id!r} is not doc_sentence")
        grouped.setdefault((sentence.domain, doc_id), []).append(sentence)
    return [
        Document(domain, doc_id, tuple(sorted(rows, key=lambda s: int(s.id.partition("_")[2]))))
        for (domain, doc_id), rows in grouped.items()
    ]


def split(documents: list[Document]) -> dict[str, list[Document]]:
    """Whole documents, by the sentence split's rule (sha256 of "<domain>/<id>", 80/10/10 per domain)."""
    return split_by_domain(documents, DOCUMENT_DOMAINS)


def split_hashes(parts: dict[str, list[Document]]) -> dict[str, str]:
    """sha256 of each split's (domain, doc, label, sentence ids) list: changes if membership or labels change."""
    return {
        name: sha256_bytes(json.dumps([[d.domain, d.id, d.label, [s.id for s in d.sentences]] for d in rows]).encode())
        for name, rows in parts.items()
    }


def load_document_splits() -> tuple[dict[str, list[Document]], dict[str, str]]:
    sentences, data_sha256 = read_ground_truth()
    parts = split(group_documents(sentences))
    info = {"data_sha256": data_sha256, **{f"{k}_sha256": v for k, v in split_hashes(parts).items()}}
    info.update({f"{k}_documents": str(len(v)) for k, v in parts.items()})
    info.update({f"{k}_sentences": str(sum(len(d.sentences) for d in v)) for k, v in parts.items()})
    return parts, info
