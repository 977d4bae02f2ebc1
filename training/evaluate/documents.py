"""Document model quality through the served pipeline, beside two baselines on the same documents.

    python -m training.evaluate.documents exported/han-vader-docs/1 [--split test] [--write-manifest]

Ours: service.pipelines.document.DocumentPipeline on each document's text (its sentences joined with
one space, split back by the served rule). Baselines: the plain average of the served sentence model's
(`sentiment-bigru`) probabilities over the document's gold sentences, and VADER's mean compound score
(>= 0.05 positive, <= -0.05 negative). The sentence model was split by sentence, not by document, so
most sentences of these test documents were in its training data: its number is an optimistic bound.
A fair version of it averages only the sentences it never trained on (its dev and test split), on the
documents that have such a sentence, with the HAN scored on the same documents.
Sentence scores: the HAN's sentence labels on the gold sentences the served rule reproduces exactly.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import numpy as np

from service.batching.runs import run_pipeline
from service.model.manifest import republish_manifest
from service.pipelines.classification import ClassificationPipeline
from service.pipelines.document import DocumentPipeline, DocumentPrediction
from service.runtime.version_loader import load_version
from training.data.documents import DOCUMENT_DOMAINS, Document, load_document_splits
from training.data.sentiment import LABELS
from training.data.sentiment import load_splits as load_sentence_splits
from training.evaluate.sentiment import VADER_THRESHOLD, score

SENTENCE_MODEL = pathlib.Path("exported/sentiment-bigru/2")


def served_documents(version_dir: pathlib.Path, documents: list[Document], batch_size: int = 8
                     ) -> list[DocumentPrediction]:
    pipeline = DocumentPipeline(load_version(version_dir))
    texts = [d.text for d in documents]
    predictions: list[DocumentPrediction] = []
    for start in range(0, len(texts), batch_size):
        predictions += run_pipeline(pipeline, texts[start : start + batch_size])
    return predictions


def sentence_average_labels(sentence_model: pathlib.Path, documents: list[Document],
                            seen: set[tuple[str, str]] | None = None) -> list[int | None]:
    """Argmax of the mean of the served sentence model's probabilities over each document's sentences
    (those not in `seen` when given; None for a document with no such sentence)."""
    pipeline = ClassificationPipeline(load_version(sentence_model))
    labels: list[int | None] = []
    for document in documents:
        texts = [s.text for s in document.sentences if seen is None or (s.domain, s.id) not in seen]
        if not texts:
            labels.append(None)
            continue
        predictions = run_pipeline(pipeline, texts)
        mean = np.mean([[p.probabilities[label] for label in LABELS] for p in predictions], axis=0)
        labels.append(int(np.argmax(mean)))
    return labels


def vader_mean_labels(documents: list[Document]) -> list[int]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    labels = []
    for document in documents:
        compound = float(np.mean([analyzer.polarity_scores(s.text)["compound"] for s in document.sentences]))
        labels.append(0 if compound <= -VADER_THRESHOLD else 2 if compound >= VADER_THRESHOLD else 1)
    return labels


def matched_sentences(documents: list[Document], predictions: list[DocumentPrediction]
                      ) -> tuple[list[int], list[int], int]:
    """Gold and HAN labels of the gold sentences the served split reproduced exactly, and the gold count."""
    gold, ours, total = [], [], 0
    for document, prediction in zip(documents, predictions, strict=True):
        served = {document.text[s.start : s.end]: s.label for s in prediction.sentences}
        for sentence in document.sentences:
            total += 1
            if sentence.text in served:
                gold.append(sentence.label)
                ours.append(LABELS.index(served[sentence.text]))
    return gold, ours, total


def evaluate_version(version_dir: pathlib.Path, documents: list[Document], split: str = "test",
                     sentence_model: pathlib.Path = SENTENCE_MODEL) -> dict[str, Any]:
    predictions = served_documents(version_dir, documents)
    ours = [LABELS.index(p.label) for p in predictions]
    average = [label for label in sentence_average_labels(sentence_model, documents) if label is not None]
    seen = {(s.domain, s.id) for s in load_sentence_splits()[0]["train"]}
    unseen = sentence_average_labels(sentence_model, documents, seen)
    vader = vader_mean_labels(documents)
    gold = [d.label for d in documents]
    report: dict[str, Any] = {"split": split, "documents": {}, "sentence_average_baseline": {},
                              "vader_mean_baseline": {},
                              "sentence_baseline_model": f"{sentence_model.parent.name}/{sentence_model.name}"}
    for domain in ["pooled", *DOCUMENT_DOMAINS]:
        rows = [i for i, d in enumerate(documents) if domain == "pooled" or d.domain == domain]
        answers = (("documents", ours), ("sentence_average_baseline", average), ("vader_mean_baseline", vader))
        for key, labels in answers:
            report[key][domain] = score([gold[i] for i in rows], [labels[i] for i in rows])
    rows, unseen_labels = [], []
    for i, label in enumerate(unseen):
        if label is not None:
            rows.append(i)
            unseen_labels.append(label)
    report["unseen_sentences_comparison"] = {
        "note": "documents with a sentence the sentence model never trained on; it averages only those",
        "sentences_seen_in_sentence_model_training": sum((s.domain, s.id) in seen for d in documents
                                                         for s in d.sentences),
        "sentences": sum(len(d.sentences) for d in documents),
        "han": score([gold[i] for i in rows], [ours[i] for i in rows]),
        "sentence_average": score([gold[i] for i in rows], unseen_labels),
    }
    sentence_gold, sentence_ours, total = matched_sentences(documents, predictions)
    report["sentences"] = {**score(sentence_gold, sentence_ours), "gold_sentences": total,
                           "note": "gold sentences the served split reproduced exactly"}
    report["split_agreement"] = {
        "documents_split_exactly": sum(
            [d.text[s.start : s.end] for s in p.sentences] == [s.text for s in d.sentences]
            for d, p in zip(documents, predictions, strict=True)),
        "documents": len(documents)}
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'domain':<8} {'n':>4} {'HAN F1':>7} {'avg F1':>7} {'VADER F1':>9} {'HAN acc':>8} {'avg acc':>8}"]
    for domain, ours in report["documents"].items():
        average = report["sentence_average_baseline"][domain]
        vader = report["vader_mean_baseline"][domain]
        lines.append(f"{domain:<8} {ours['n']:>4} {ours['macro_f1']:>7.3f} {average['macro_f1']:>7.3f} "
                     f"{vader['macro_f1']:>9.3f} {ours['accuracy']:>8.3f} {average['accuracy']:>8.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--write-manifest", action="store_true", help="store the metrics in manifest.json")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts, _ = load_document_splits()
    report = evaluate_version(args.version_dir, parts[args.split], args.split)
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    if args.write_manifest:
        republish_manifest(args.version_dir, {"metrics": report})


if __name__ == "__main__":
    main()
