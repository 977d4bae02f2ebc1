"""Fit a translation model's confidence (issue #19) and store it in its manifest's `decoding.confidence`.

    OMP_NUM_THREADS=1 python -m training.calibrate_translation exported/transformer/1 [--write-manifest]

Every verse of dev and test and every out-of-domain sentence (training/data/out_of_domain_en.tsv, our own
writing) is translated through the served pipeline with the model's default options (test again greedily,
as the stream decodes), and the features
of service/pipelines/translation_confidence.py are read from each result. A logistic regression (numpy,
Newton steps, a small L2 penalty) is fitted on DEV only: positives are dev verses whose sentence chrF is
at least CHRF_THRESHOLD, negatives the other dev verses and the calibration half of the out-of-domain
sentences. It is measured on TEST (held-out verses) against the test half of the out-of-domain
sentences: AUROC of the confidence and of the mean token log-prob alone, Spearman correlation with
sentence chrF on the test verses, and the calibration error. `--write-manifest` republishes the
manifest with the section (the graphs are untouched: only manifest.json changes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import sacrebleu

from service.batching.runs import run_pipeline
from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.translation import DecodeOptions, Translation, TranslationPipeline, TranslationRequest
from service.pipelines.translation_confidence import COVERAGE_THRESHOLD, FEATURES, ConfidenceModel
from service.runtime.version_loader import load_version
from training.data.translation import load_splits

OUT_OF_DOMAIN = pathlib.Path(__file__).resolve().parent / "data" / "out_of_domain_en.tsv"
CACHE = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "translation-confidence"
# A verse translation scoring at least this sentence chrF counts as usable (the committed models' corpus
# chrF on test is 35-40; the dev verses split about in half around it).
CHRF_THRESHOLD = 35.0
# The out-of-domain sentences weigh as much in the fit, together, as the dev verses below the threshold:
# unusable output from foreign input counts as much as unusable output from a verse. Chosen before
# measuring; docs/translation.md "Confidence" shows how little other weights change.
OOD_WEIGHT: float | None = None  # None: balanced as above; a number: each sentence's weight
L2 = 1e-2          # on standardised features: keeps the weights finite if a feature separates perfectly
BATCH_SIZE = 32
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Scored:
    """One translated text: its features, its output and, for a verse, its sentence chrF."""

    source: str
    output: str
    features: dict[str, float]
    chrf: float | None


def out_of_domain() -> dict[str, list[str]]:
    """The written sentences: within each category, odd lines calibrate, even lines test."""
    halves: dict[str, list[str]] = {"calibration": [], "test": []}
    seen: dict[str, int] = {}
    for line in OUT_OF_DOMAIN.read_text("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        category, sentence = line.split("\t")
        index = seen.get(category, 0)
        seen[category] = index + 1
        halves["calibration" if index % 2 == 0 else "test"].append(sentence)
    return halves


def translate(pipeline: TranslationPipeline, texts: list[str], options: DecodeOptions) -> list[Translation]:
    """In input order, batched by length as the batcher groups them."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: list[Translation | None] = [None] * len(texts)
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start : start + BATCH_SIZE]
        requests = [TranslationRequest(texts[i], options) for i in rows]
        for row, result in zip(rows, run_pipeline(pipeline, requests), strict=True):
            results[row] = result
    return [r for r in results if r is not None]


def score_texts(pipeline: TranslationPipeline, sources: list[str], references: list[str] | None,
                options: DecodeOptions) -> list[Scored]:
    scored = []
    for i, result in enumerate(translate(pipeline, sources, options)):
        if result.features is None:
            raise SystemExit("the pipeline computed no features")
        output = result.hypotheses[0].text
        chrf = None if references is None else sacrebleu.sentence_chrf(output, [references[i]]).score
        scored.append(Scored(sources[i], output, result.features, chrf))
    return scored


def collect(version_dir: pathlib.Path) -> dict[str, list[Scored]]:
    """dev, test, ood_calibration, ood_test with the model's default options, and test_greedy and
    ood_test_greedy (the stream decodes greedily); cached under .cache/ by the version's graph checksums."""
    manifest = read_manifest(version_dir)
    key = hashlib.sha256(json.dumps([manifest.data["files"].get(f) for f in sorted(manifest.data["files"])
                                     if f != "manifest.json"] + [OUT_OF_DOMAIN.read_text("utf-8"),
                                                                 COVERAGE_THRESHOLD]).encode()).hexdigest()[:16]
    cache = CACHE / f"{manifest.spec.name}-{manifest.spec.version}-{key}.json"
    raw = json.loads(cache.read_text("utf-8")) if cache.exists() else {}
    data = {name: [Scored(**item) for item in items] for name, items in raw.items()}
    parts, _ = load_splits()
    ood = out_of_domain()
    pipeline: TranslationPipeline | None = None
    # name -> (sources, references or None, greedy?)
    verses = {name: ([p.source for p in parts[name]], [p.target for p in parts[name]]) for name in ("dev", "test")}
    wanted: dict[str, tuple[list[str], list[str] | None, bool]] = {
        "dev": (*verses["dev"], False), "test": (*verses["test"], False),
        "ood_calibration": (ood["calibration"], None, False), "ood_test": (ood["test"], None, False),
        "test_greedy": (*verses["test"], True), "ood_test_greedy": (ood["test"], None, True)}
    for name, (sources, references, is_greedy) in wanted.items():
        if name in data:
            continue
        pipeline = pipeline or TranslationPipeline(load_version(version_dir, intra_op_threads=1), features=True)
        options = DecodeOptions(beam_size=1) if is_greedy else pipeline.defaults
        data[name] = score_texts(pipeline, sources, references, options)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({k: [s.__dict__ for s in v] for k, v in data.items()}, ensure_ascii=False),
                         "utf-8")
    return data


def matrix(items: list[Scored]) -> np.ndarray:
    return np.array([[s.features[name] for name in FEATURES] for s in items], dtype=np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, l2: float = L2,
                 steps: int = 50) -> tuple[np.ndarray, float]:
    """Weights and intercept of an L2-penalised, sample-weighted logistic regression on standardised x
    (Newton / IRLS; the intercept is not penalised). Converges in ~10 steps on these few hundred rows."""
    sample_weight = np.ones(len(x)) if sample_weight is None else sample_weight
    design = np.hstack([x, np.ones((len(x), 1))])
    weights = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2 * len(x))
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ weights, -40, 40)))
        gradient = design.T @ (sample_weight * (p - y)) + penalty * weights
        curvature = (design * (sample_weight * p * (1 - p))[:, None]).T @ design
        hessian = curvature + np.diag(penalty) + 1e-9 * np.eye(len(weights))
        update = np.linalg.solve(hessian, gradient)
        weights -= update
        if np.abs(update).max() < 1e-10:
            break
    return weights[:-1], float(weights[-1])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    ranks = average_ranks(np.concatenate([positive, negative]))
    return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2)
                 / (len(positive) * len(negative)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def calibration_error(confidence: np.ndarray, labels: np.ndarray) -> float:
    """Expected calibration error over equal-width bins: sum of |mean confidence - share positive| by weight."""
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    error = 0.0
    for b in range(CALIBRATION_BINS):
        members = bins == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - labels[members].mean())
    return float(error)


def calibrate(data: dict[str, list[Scored]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest section and the measurements on test."""
    dev_chrf = np.array([s.chrf for s in data["dev"]], dtype=np.float64)
    x = np.vstack([matrix(data["dev"]), matrix(data["ood_calibration"])])
    y = np.concatenate([(dev_chrf >= CHRF_THRESHOLD).astype(float), np.zeros(len(data["ood_calibration"]))])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature (no byte fallback in a vocabulary) gets weight 0 anyway
    dev_negative = int((dev_chrf < CHRF_THRESHOLD).sum())
    ood_weight = OOD_WEIGHT if OOD_WEIGHT is not None else dev_negative / len(data["ood_calibration"])
    weight = np.concatenate([np.ones(len(data["dev"])), np.full(len(data["ood_calibration"]), ood_weight)])
    coefficients, intercept = fit_logistic((x - mean) / scale, y, weight)
    section = {"features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
               "coefficients": coefficients.tolist(), "intercept": intercept,
               "coverage_threshold": COVERAGE_THRESHOLD}
    model = ConfidenceModel(FEATURES, mean, scale, coefficients, intercept, COVERAGE_THRESHOLD)

    def confidences(items: list[Scored]) -> np.ndarray:
        return np.array([model.score(s.features) for s in items])

    def mean_log_prob(items: list[Scored]) -> np.ndarray:
        return np.array([s.features["mean_log_prob"] for s in items])

    test, ood = data["test"], data["ood_test"]
    test_chrf = np.array([s.chrf for s in test], dtype=np.float64)
    test_confidence = confidences(test)
    labels = np.concatenate([(test_chrf >= CHRF_THRESHOLD).astype(float), np.zeros(len(ood))])
    report = {
        "fitted_on": {"dev_verses": len(data["dev"]), "dev_positive": int(y[: len(data["dev"])].sum()),
                      "out_of_domain_calibration": len(data["ood_calibration"]),
                      "chrf_threshold": CHRF_THRESHOLD, "l2": L2, "ood_weight": ood_weight,
                      "options": "the model's defaults"},
        "test_verses": len(test), "out_of_domain_test": len(ood),
        "auroc_verses_vs_out_of_domain": {"confidence": auroc(test_confidence, confidences(ood)),
                                          "mean_log_prob": auroc(mean_log_prob(test), mean_log_prob(ood))},
        "spearman_with_sentence_chrf_on_test_verses": {"confidence": spearman(test_confidence, test_chrf),
                                                       "mean_log_prob": spearman(mean_log_prob(test), test_chrf)},
        "auroc_good_vs_bad_test_verses": {
            "confidence": auroc(test_confidence[test_chrf >= CHRF_THRESHOLD],
                                test_confidence[test_chrf < CHRF_THRESHOLD]),
            "mean_log_prob": auroc(mean_log_prob(test)[test_chrf >= CHRF_THRESHOLD],
                                   mean_log_prob(test)[test_chrf < CHRF_THRESHOLD])},
        "greedy": {  # the stream's decoding, scored with the same coefficients
            "auroc_verses_vs_out_of_domain": {
                "confidence": auroc(confidences(data["test_greedy"]), confidences(data["ood_test_greedy"])),
                "mean_log_prob": auroc(mean_log_prob(data["test_greedy"]), mean_log_prob(data["ood_test_greedy"]))},
            "spearman_with_sentence_chrf_on_test_verses": spearman(
                confidences(data["test_greedy"]), np.array([s.chrf for s in data["test_greedy"]], dtype=np.float64)),
        },
        "calibration_error_test": calibration_error(np.concatenate([test_confidence, confidences(ood)]), labels),
        "mean_confidence": {"test_verses": float(test_confidence.mean()), "out_of_domain_test":
                            float(confidences(ood).mean())},
        "examples": [{"source": s.source, "output": s.output, "confidence": round(model.score(s.features), 3),
                      "chrf": None if s.chrf is None else round(s.chrf, 1)}
                     for s in [*test[:: max(1, len(test) // 4)][:4], *ood[:: max(1, len(ood) // 4)][:4]]],
    }
    return section, rounded(report)


def rounded(value: Any) -> Any:
    """Measurements to 4 decimals, however nested (the coefficients keep every digit)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--write-manifest", action="store_true", help="republish manifest.json with the section")
    args = parser.parse_args()
    section, report = calibrate(collect(args.version_dir))
    print(json.dumps({"section": section, "report": report}, indent=1, ensure_ascii=False))
    if args.write_manifest:
        manifest = read_manifest(args.version_dir)
        summary = {k: report[k] for k in ("fitted_on", "auroc_verses_vs_out_of_domain",
                                          "spearman_with_sentence_chrf_on_test_verses", "greedy",
                                          "calibration_error_test")}
        decoding = {**manifest.data["decoding"], "confidence": {**section, "fitted": summary}}
        republish_manifest(args.version_dir, {"decoding": decoding})


if __name__ == "__main__":
    main()
