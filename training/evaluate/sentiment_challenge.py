"""Everyday sentences through the served pipeline: the sentiment challenge set (issue 19, item 1).

    python -m training.evaluate.sentiment_challenge exported/sentiment-bigru/2 [--write-manifest]

`training/data/sentiment_challenge.jsonl` holds short everyday English texts of our own writing, one JSON
object a line: the text, its label (negative / neutral / positive) and its category (negation, contrast,
sarcasm, emoji_only, emoji_text, slang, long_review, neutral_fact, question, mixed). The labelling rule and
the proportions are in docs/sentiment.md. The test split answers "how good on reviews, tweets and NYT
snippets"; this set asks how the model reads the constructions people actually type.

Labels come from ClassificationPipeline over the exported ONNX file (the server's code, as
training/evaluate/sentiment.py); VADER uses the same +-0.05 compound thresholds as there. Figures: macro-F1
overall and per category for the model and VADER, a paired bootstrap of the model's macro-F1 minus
VADER's, and each text's served label with its top-probability margin (so a test on another CPU can
compare labels only where the model is not on a knife edge).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import random
from dataclasses import dataclass
from typing import Any

from service.batching.runs import run_pipeline
from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.classification import ClassificationPipeline
from service.runtime.version_loader import load_version
from training.data.sentiment import LABELS
from training.evaluate.sentiment import vader_labels
from training.metrics import accuracy, macro_f1

CHALLENGE_FILE = pathlib.Path(__file__).resolve().parents[1] / "data" / "sentiment_challenge.jsonl"
CATEGORIES = ("negation", "contrast", "sarcasm", "emoji_only", "emoji_text", "slang", "long_review",
              "neutral_fact", "question", "mixed")
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class ChallengeText:
    text: str
    label: int  # index into LABELS
    category: str


def load_challenge(path: pathlib.Path = CHALLENGE_FILE) -> list[ChallengeText]:
    """The texts, refusing an unknown label or category, an empty text or a repeated one, naming the line."""
    texts: list[ChallengeText] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        text, label, category = row["text"], row["label"], row["category"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path.name}:{number}: empty text")
        if label not in LABELS:
            raise ValueError(f"{path.name}:{number}: label {label!r} is not one of {list(LABELS)}")
        if category not in CATEGORIES:
            raise ValueError(f"{path.name}:{number}: category {category!r} is not one of {list(CATEGORIES)}")
        key = " ".join(text.lower().split())
        if key in seen:
            raise ValueError(f"{path.name}:{number}: repeats line {seen[key]}")
        seen[key] = number
        texts.append(ChallengeText(text, LABELS.index(label), category))
    return texts


def score(gold: list[int], predicted: list[int]) -> dict[str, float | int]:
    return {"macro_f1": round(macro_f1(gold, predicted, len(LABELS)), 4),
            "accuracy": round(accuracy(gold, predicted), 4), "n": len(gold)}


def paired_bootstrap(gold: list[int], a: list[int], b: list[int], samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 13) -> dict[str, float | int | list[float]]:
    """Macro-F1(a) - macro-F1(b) resampling texts with replacement: its 95% interval and how often a wins."""
    rng = random.Random(seed)
    differences = []
    for _ in range(samples):
        picks = [rng.randrange(len(gold)) for _ in gold]
        g = [gold[i] for i in picks]
        differences.append(macro_f1(g, [a[i] for i in picks], len(LABELS))
                           - macro_f1(g, [b[i] for i in picks], len(LABELS)))
    ordered = sorted(differences)
    return {
        "difference": round(macro_f1(gold, a, len(LABELS)) - macro_f1(gold, b, len(LABELS)), 4),
        "difference_ci95": [round(ordered[int(0.025 * samples)], 4), round(ordered[int(0.975 * samples) - 1], 4)],
        "share_a_better": round(sum(d > 0 for d in differences) / samples, 4),
        "samples": samples,
    }


def served_predictions(version_dir: pathlib.Path, texts: list[str]) -> tuple[list[int], list[float]]:
    """Each text's served label and its margin: top probability minus the runner-up."""
    pipeline = ClassificationPipeline(load_version(version_dir))
    labels, margins = [], []
    for start in range(0, len(texts), 64):
        for prediction in run_pipeline(pipeline, texts[start : start + 64]):
            labels.append(LABELS.index(prediction.label))
            top, second = sorted(prediction.probabilities.values(), reverse=True)[:2]
            margins.append(round(top - second, 4))
    return labels, margins


def score_by_category(texts: list[ChallengeText], predicted: list[int]) -> dict[str, dict[str, float | int]]:
    report = {"overall": score([t.label for t in texts], predicted)}
    for category in CATEGORIES:
        rows = [i for i, t in enumerate(texts) if t.category == category]
        report[category] = score([texts[i].label for i in rows], [predicted[i] for i in rows])
    return report


def evaluate_challenge(version_dir: pathlib.Path, path: pathlib.Path = CHALLENGE_FILE) -> dict[str, Any]:
    texts = load_challenge(path)
    gold = [t.label for t in texts]
    ours, margins = served_predictions(version_dir, [t.text for t in texts])
    vader = vader_labels([t.text for t in texts])
    return {
        "file": f"training/data/{path.name}" if path == CHALLENGE_FILE else str(path),
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "served": score_by_category(texts, ours),
        "vader_baseline": score_by_category(texts, vader),
        "served_minus_vader": paired_bootstrap(gold, ours, vader),
        "served_labels": [LABELS[label] for label in ours],
        "served_margins": margins,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'category':<13} {'n':>4} {'ours F1':>8} {'VADER F1':>9} {'ours acc':>9} {'VADER acc':>10}"]
    for category, ours in report["served"].items():
        vader = report["vader_baseline"][category]
        lines.append(f"{category:<13} {ours['n']:>4} {ours['macro_f1']:>8.3f} {vader['macro_f1']:>9.3f} "
                     f"{ours['accuracy']:>9.3f} {vader['accuracy']:>10.3f}")
    bootstrap = report["served_minus_vader"]
    lines.append(f"ours - VADER macro-F1 {bootstrap['difference']:+.3f}, 95% CI {bootstrap['difference_ci95']}, "
                 f"ours better in {bootstrap['share_a_better']:.1%} of {bootstrap['samples']} resamples")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--write-manifest", action="store_true", help="store the figures as metrics.challenge")
    parser.add_argument("--fp32-source", type=pathlib.Path, default=None,
                        help="an int8 version's fp32 source (not published): measure it too and store the "
                             "int8 delta as quantization.challenge_vs_fp32")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = evaluate_challenge(args.version_dir)
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    changes: dict[str, Any] = {}
    if args.fp32_source:
        fp32 = evaluate_challenge(args.fp32_source)
        beside = int8_delta(report, fp32)
        print(json.dumps(beside, indent=1))
        changes["quantization"] = {**read_manifest(args.version_dir).data.get("quantization", {}),
                                   "challenge_vs_fp32": beside}
    if args.write_manifest:
        metrics = read_manifest(args.version_dir).data.get("metrics", {})
        republish_manifest(args.version_dir, {"metrics": {**metrics, "challenge": report}, **changes})


def int8_delta(int8: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """What quantizing changed on the challenge set: macro-F1 per category, and the texts relabelled."""
    return {
        "fp32_served": {category: figures["macro_f1"] for category, figures in fp32["served"].items()},
        "macro_f1_delta": {category: round(figures["macro_f1"] - fp32["served"][category]["macro_f1"], 4)
                           for category, figures in int8["served"].items()},
        "labels_changed": sum(a != b for a, b in zip(int8["served_labels"], fp32["served_labels"], strict=True)),
    }


if __name__ == "__main__":
    main()
