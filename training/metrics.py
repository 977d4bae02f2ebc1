"""Classification metrics (macro-F1 is the headline: classes are not balanced)."""

from __future__ import annotations

from collections.abc import Sequence


def macro_f1(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> float:
    return sum(per_class_f1(gold, predicted, num_labels)) / num_labels


def per_class_f1(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> list[float]:
    scores = []
    for label in range(num_labels):
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, predicted, strict=True) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return scores


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    return sum(1 for g, p in zip(gold, predicted, strict=True) if g == p) / max(1, len(gold))
