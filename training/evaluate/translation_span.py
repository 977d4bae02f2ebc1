"""Local-p against global attention: the same recipe, only the attention span differs (docs/translation.md).

    OMP_NUM_THREADS=1 python -m training.evaluate.translation_span exported/seq2seq-local/1 \
        --baseline exported/seq2seq-attention/1 [--write-manifest]

Three comparisons, all through the served pipeline (service.pipelines.translation, one onnxruntime
thread), each model scored on the same verses:
- quality (sacreBLEU BLEU / chrF, greedy and beam 4) on the longest test verses: the top decile by
  source tokens (subwords + [EOS]; both models share one tokenizer, so one selection), where a window
  over the source should matter most (Luong et al. 2015 report local-p gains growing with length);
- decoding speed on those verses (target tokens/s, greedy and beam 4): ROUNDS rounds alternating the
  two models, so a burst of load from other jobs on the shared cores hits both; the fastest round of
  each is reported (the least disturbed), every round is kept;
- the dev chrF curves of the two training runs at the steps both recorded (training.history).
Scores on all test verses are each manifest's `metrics` (training/evaluate/translation.py).
`--write-manifest` stores the report as `metrics.span_comparison` of the first version.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

from service.model.manifest import read_manifest, with_metrics
from service.pipelines.translation import TranslationPipeline
from service.runtime.version_loader import load_version
from training.data.translation import TranslationPair, load_splits
from training.evaluate.translation import SETTINGS, scores, translate_all

LONGEST_FRACTION = 0.1  # the top decile
ROUNDS = 3
BATCH_SIZE = 32  # as training/evaluate/translation.py measures speed
KEEP = ("challenge",)  # records of other evaluations kept when this one republishes


def longest(pipeline: TranslationPipeline, pairs: Sequence[TranslationPair], fraction: float = LONGEST_FRACTION
            ) -> list[TranslationPair]:
    """The ceil(fraction * n) pairs with the most source tokens (ties: split order), in split order."""
    lengths = [len(pipeline.source_ids(p.source)) for p in pairs]
    count = math.ceil(fraction * len(pairs))
    chosen = sorted(range(len(pairs)), key=lambda i: (-lengths[i], i))[:count]
    return [pairs[i] for i in sorted(chosen)]


def dev_curves(model: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """Dev chrF/BLEU of both runs at every step both evaluated (the 300-verse dev subset, greedy in torch)."""
    other = {point["step"]: point for point in baseline["training"]["history"]}
    return [{"step": point["step"], "epoch": point["epoch"], "chrf": point["chrf"], "bleu": point["bleu"],
             "baseline_chrf": other[point["step"]]["chrf"], "baseline_bleu": other[point["step"]]["bleu"]}
            for point in model["training"]["history"] if point["step"] in other]


def compare(version_dir: pathlib.Path, baseline_dir: pathlib.Path, pairs: Sequence[TranslationPair],
            rounds: int = ROUNDS) -> dict[str, Any]:
    pipelines = {name: TranslationPipeline(load_version(path, intra_op_threads=1))
                 for name, path in (("model", version_dir), ("baseline", baseline_dir))}
    chosen = longest(pipelines["model"], pairs)
    lengths = sorted(len(pipelines["model"].source_ids(p.source)) for p in chosen)
    sources, references = [p.source for p in chosen], [p.target for p in chosen]
    quality: dict[str, dict[str, Any]] = {name: {} for name in pipelines}
    speeds: dict[str, dict[str, list[dict[str, float]]]] = {name: {s: [] for s in SETTINGS} for name in pipelines}
    for _ in range(rounds):
        for setting, options in SETTINGS.items():
            for name, pipeline in pipelines.items():
                outputs, speed = translate_all(pipeline, sources, options, BATCH_SIZE)
                quality[name].setdefault(setting, scores(outputs, references))  # decoding is deterministic
                speeds[name][setting].append(speed)
    manifests = {name: read_manifest(path).data for name, path in (("model", version_dir), ("baseline", baseline_dir))}
    return {
        "split": "test",
        "baseline": f"{manifests['baseline']['name']}/{manifests['baseline']['version']}",
        "longest_decile": {
            "n": len(chosen), "of": len(pairs), "min_source_tokens": lengths[0], "max_source_tokens": lengths[-1],
            **{name: {setting: {**quality[name][setting],
                                "speed_1_thread": max(speeds[name][setting], key=lambda s: s["target_tokens_per_s"]),
                                "target_tokens_per_s_rounds": [s["target_tokens_per_s"] for s in speeds[name][setting]]}
                      for setting in SETTINGS}
               for name in pipelines},
        },
        "all_test": {name: {setting: {k: manifests[name]["metrics"][setting][k] for k in ("bleu", "chrf")}
                            for setting in SETTINGS}
                     for name in pipelines if manifests[name]["metrics"]},
        "dev_curve": dev_curves(manifests["model"], manifests["baseline"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--baseline", type=pathlib.Path, required=True, help="the global-attention version")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--write-manifest", action="store_true", help="store as metrics.span_comparison")
    args = parser.parse_args()
    parts, _ = load_splits()
    report = compare(args.version_dir, args.baseline, parts["test"], args.rounds)
    print(json.dumps(report, indent=1, ensure_ascii=False))
    if args.write_manifest:
        current = read_manifest(args.version_dir).metrics
        with_metrics(args.version_dir, {**current, "span_comparison": report}, keep=KEEP)


if __name__ == "__main__":
    main()
