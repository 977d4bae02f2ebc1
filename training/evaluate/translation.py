"""Translation quality through the served path: sacreBLEU BLEU and chrF on the held-out test chapters.

    OMP_NUM_THREADS=1 python -m training.evaluate.translation exported/transformer/1 [--write-manifest]

Hypotheses come from service.pipelines.translation.TranslationPipeline over the exported ONNX graphs
with one onnxruntime thread: the exact code the server runs. Rows: greedy, beam 4 (GNMT length
penalty 0.6), and a copy-source baseline (the English verse as its own "translation": names and
numbers overlap, so it is not zero). Every verse of the split is scored; nothing is length filtered.

The same hypotheses are scored again on the split's "clean" part: the verses no training verse could
lend half of its reference 4-grams to (training/data/translation_overlap.py). Parallel passages
(2 Chronicles 9 ~ 1 Kings 10, ...) make the rest memorisable; "clean" is the figure for unseen text.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import sacrebleu

from service.batching.runs import run_pipeline
from service.model.manifest import with_metrics
from service.pipelines.output_constraints import OutputConstraints, longest_loop
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version
from training.data.translation import TranslationPair, load_splits
from training.data.translation_overlap import LEAK_THRESHOLD, N, leaked_mask

SETTINGS = {"greedy": DecodeOptions(beam_size=1), "beam4": DecodeOptions(beam_size=4, length_penalty=0.6)}
EXAMPLES = 5


def output_health(hypotheses: list[str]) -> dict[str, float]:
    """Outputs that are empty, and the share caught in a loop: a word n-gram (n <= 4) three times in a row."""
    loops = sum(longest_loop(h.split()) >= 3 for h in hypotheses)
    return {"empty": sum(not h.strip() for h in hypotheses), "loop_share": round(loops / max(1, len(hypotheses)), 4)}


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    return {"bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2)}


def translate_all(pipeline: TranslationPipeline, texts: list[str], options: DecodeOptions,
                  batch_size: int) -> tuple[list[str], dict[str, float]]:
    """Translations in input order (batches of similar length, as the batcher groups them) and speed."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs = [""] * len(texts)
    target_tokens = 0
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        requests = [TranslationRequest(texts[i], options) for i in rows]
        for row, result in zip(rows, run_pipeline(pipeline, requests), strict=True):
            outputs[row] = result.hypotheses[0].text
            target_tokens += len(result.hypotheses[0].tokens)
    seconds = time.perf_counter() - started
    return outputs, {"seconds": round(seconds, 1), "sentences_per_s": round(len(texts) / seconds, 2),
                     "target_tokens_per_s": round(target_tokens / seconds, 1), "batch_size": batch_size}


def evaluate_version(version_dir: pathlib.Path, pairs: Sequence[TranslationPair], batch_size: int = 32,
                     leaked: Sequence[bool] | None = None, constraints: OutputConstraints | None = None
                     ) -> dict[str, Any]:
    """The committed verses or the user's own pairs (training/byo/translation.py): the same scoring.

    `leaked` (one flag a pair) adds the scores of the clean and the leaked verses apart; `constraints`
    replaces the manifest's output rules (to measure another setting before publishing it)."""
    pipeline = TranslationPipeline(load_version(version_dir, intra_op_threads=1))
    if constraints is not None:
        pipeline.constraints = constraints
    sources, references = [p.source for p in pairs], [p.target for p in pairs]
    report: dict[str, Any] = {"n": len(pairs), "copy_source_baseline": scores(sources, references)}
    outputs: dict[str, list[str]] = {}
    for name, options in SETTINGS.items():
        outputs[name], speed = translate_all(pipeline, sources, options, batch_size)
        report[name] = {**scores(outputs[name], references), **output_health(outputs[name]),
                        "speed_1_thread": speed}
    if leaked is not None:
        report["clean"] = subset_scores(outputs, sources, references, [not flag for flag in leaked])
        report["leaked"] = subset_scores(outputs, sources, references, list(leaked))
        report["clean"]["rule"] = (f"verses no training verse holds >= {LEAK_THRESHOLD:g} of the reference "
                                   f"{N}-grams of (13a tokens, lower-cased)")
    # A fixed, spread-out sample of verses: every (n / EXAMPLES)-th one in split order.
    step = max(1, len(pairs) // EXAMPLES)
    report["examples"] = [
        {"ref": p.key, "source": p.source, "reference": p.target,
         **{name: outputs[name][i] for name in SETTINGS}}
        for i, p in list(enumerate(pairs))[::step][:EXAMPLES]
    ]
    return report


def subset_scores(outputs: dict[str, list[str]], sources: list[str], references: list[str],
                  keep: list[bool]) -> dict[str, Any]:
    """The scores of the kept verses only, from hypotheses already made."""
    pick = [i for i, flag in enumerate(keep) if flag]
    refs = [references[i] for i in pick]
    return {"n": len(pick), "copy_source_baseline": scores([sources[i] for i in pick], refs),
            **{name: scores([hyps[i] for i in pick], refs) for name, hyps in outputs.items()}}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'system':<22} {'BLEU':>6} {'chrF':>6} {'sent/s':>7} {'empty':>5} {'loops':>6}"]
    for name in ["copy_source_baseline", *SETTINGS]:
        row = report[name]
        speed = row.get("speed_1_thread", {}).get("sentences_per_s", float("nan"))
        lines.append(f"{name:<22} {row['bleu']:>6.2f} {row['chrf']:>6.2f} {speed:>7.2f} {row.get('empty', '-'):>5} "
                     f"{row.get('loop_share', '-'):>6}")
    for part in ("clean", "leaked"):
        if part in report:
            lines.append(f"{part} ({report[part]['n']} verses): " + ", ".join(
                f"{name} {report[part][name]['bleu']:.2f}/{report[part][name]['chrf']:.2f}" for name in SETTINGS))
    return "\n".join(lines) + f"\n({report['split']} split, {report['n']} verses)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--limit", type=int, default=0, help="first N verses only (smoke runs; not for records)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--write-manifest", action="store_true", help="store the metrics in manifest.json")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--min-output-tokens", type=int, default=None, help="instead of the manifest's")
    parser.add_argument("--max-loop-ngram", type=int, default=None, help="instead of the manifest's")
    args = parser.parse_args()
    parts, _ = load_splits()
    pairs = parts[args.split][: args.limit or None]
    leaked = leaked_mask([p.target for p in pairs], [p.target for p in parts["train"]])
    constraints = None
    if args.min_output_tokens is not None or args.max_loop_ngram is not None:
        if args.write_manifest:
            raise SystemExit("--write-manifest measures the manifest's own output rules: set them there")
        decoding = load_version(args.version_dir, intra_op_threads=1).manifest.spec.decoding
        assert decoding is not None
        constraints = OutputConstraints(
            decoding.min_output_tokens if args.min_output_tokens is None else args.min_output_tokens,
            decoding.max_loop_ngram if args.max_loop_ngram is None else args.max_loop_ngram)
    report = {"split": args.split, "output_constraints": None if constraints is None else vars(constraints),
              **evaluate_version(args.version_dir, pairs, args.batch_size, leaked, constraints)}
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else format_table(report))
    if args.write_manifest:
        if args.limit:
            raise SystemExit("--write-manifest needs the full split (no --limit)")
        # Keep what other evaluations measured apart (training/evaluate/translation_span.py).
        with_metrics(args.version_dir, report,
                     keep=("challenge", "span_comparison", "output_rules", "before_output_rules"))


if __name__ == "__main__":
    main()
