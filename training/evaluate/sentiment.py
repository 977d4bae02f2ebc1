"""Classifier quality through the served path: the sentiment model beside the VADER lexicon on the same
sentences, and any classification model (training/byo/classification.py) by its label names.

    python -m training.evaluate.sentiment exported/sentiment-bigru/1 [--split test] [--write-manifest]

Our numbers come from service.pipelines.sentiment.SentimentPipeline over the exported ONNX file: the
exact code the server runs. VADER uses its documented thresholds (compound >= 0.05 positive, <= -0.05
negative).
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Sequence
from typing import Any

from service.batching.runs import run_pipeline
from service.model.manifest import with_metrics
from service.pipelines.classification import ClassificationPipeline
from service.runtime.version_loader import load_version
from training.data.sentiment import DOMAINS, LABELS, Sentence, load_splits
from training.metrics import accuracy, macro_f1, per_class_f1

VADER_THRESHOLD = 0.05


def vader_labels(texts: list[str]) -> list[int]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    labels = []
    for text in texts:
        compound = analyzer.polarity_scores(text)["compound"]
        labels.append(0 if compound <= -VADER_THRESHOLD else 2 if compound >= VADER_THRESHOLD else 1)
    return labels


def served_label_names(version_dir: pathlib.Path, texts: list[str], batch_size: int = 64) -> list[str]:
    """The label the served pipeline gives each text (a sentiment or a classification model)."""
    pipeline = ClassificationPipeline(load_version(version_dir))
    labels: list[str] = []
    for start in range(0, len(texts), batch_size):
        labels += [p.label for p in run_pipeline(pipeline, texts[start : start + batch_size])]
    return labels


def served_labels(version_dir: pathlib.Path, texts: list[str], batch_size: int = 64) -> list[int]:
    return [LABELS.index(label) for label in served_label_names(version_dir, texts, batch_size)]


def score(gold: list[int], predicted: list[int], labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Macro-F1, accuracy and per-class F1 of label indices into `labels`."""
    return {
        "macro_f1": round(macro_f1(gold, predicted, len(labels)), 4),
        "accuracy": round(accuracy(gold, predicted), 4),
        "per_class_f1": dict(zip(labels, (round(f, 4) for f in per_class_f1(gold, predicted, len(labels))),
                                 strict=True)),
        "n": len(gold),
    }


def evaluate_version(version_dir: pathlib.Path, sentences: list[Sentence]) -> dict[str, Any]:
    texts = [s.text for s in sentences]
    gold = [s.label for s in sentences]
    ours = served_labels(version_dir, texts)
    vader = vader_labels(texts)
    report: dict[str, Any] = {"split": "test", "served": {}, "vader_baseline": {}}
    for domain in ["pooled", *DOMAINS]:
        rows = [i for i, s in enumerate(sentences) if domain == "pooled" or s.domain == domain]
        report["served"][domain] = score([gold[i] for i in rows], [ours[i] for i in rows])
        report["vader_baseline"][domain] = score([gold[i] for i in rows], [vader[i] for i in rows])
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'domain':<8} {'n':>5} {'ours F1':>8} {'VADER F1':>9} {'ours acc':>9} {'VADER acc':>10}"]
    for domain, ours in report["served"].items():
        vader = report["vader_baseline"][domain]
        lines.append(f"{domain:<8} {ours['n']:>5} {ours['macro_f1']:>8.3f} {vader['macro_f1']:>9.3f} "
                     f"{ours['accuracy']:>9.3f} {vader['accuracy']:>10.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--write-manifest", action="store_true", help="store the metrics in manifest.json")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts, _ = load_splits()
    report = evaluate_version(args.version_dir, parts[args.split])
    report["split"] = args.split
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    if args.write_manifest:
        with_metrics(args.version_dir, report)


if __name__ == "__main__":
    main()
