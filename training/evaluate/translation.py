"""Translation quality through the served path: sacreBLEU BLEU and chrF on the held-out test chapters.

    OMP_NUM_THREADS=1 python -m training.evaluate.translation exported/transformer/1 [--write-manifest]

Hypotheses come from service.pipelines.translation.TranslationPipeline over the exported ONNX graphs
with one onnxruntime thread: the exact code the server runs. Rows: greedy, beam 4 (GNMT length
penalty 0.6), and a copy-source baseline (the English verse as its own "translation": names and
numbers overlap, so it is not zero). Every verse of the split is scored; nothing is length filtered.
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
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version
from training.data.translation import TranslationPair, load_splits

SETTINGS = {"greedy": DecodeOptions(beam_size=1), "beam4": DecodeOptions(beam_size=4, length_penalty=0.6)}
EXAMPLES = 5


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


def evaluate_version(version_dir: pathlib.Path, pairs: Sequence[TranslationPair], batch_size: int = 32
                     ) -> dict[str, Any]:
    """The committed verses or the user's own pairs (training/byo/translation.py): the same scoring."""
    pipeline = TranslationPipeline(load_version(version_dir, intra_op_threads=1))
    sources, references = [p.source for p in pairs], [p.target for p in pairs]
    report: dict[str, Any] = {"n": len(pairs), "copy_source_baseline": scores(sources, references)}
    outputs: dict[str, list[str]] = {}
    for name, options in SETTINGS.items():
        outputs[name], speed = translate_all(pipeline, sources, options, batch_size)
        report[name] = {**scores(outputs[name], references), "speed_1_thread": speed}
    # A fixed, spread-out sample of verses: every (n / EXAMPLES)-th one in split order.
    step = max(1, len(pairs) // EXAMPLES)
    report["examples"] = [
        {"ref": p.key, "source": p.source, "reference": p.target,
         **{name: outputs[name][i] for name in SETTINGS}}
        for i, p in list(enumerate(pairs))[::step][:EXAMPLES]
    ]
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'system':<22} {'BLEU':>6} {'chrF':>6} {'sent/s':>7}"]
    for name in ["copy_source_baseline", *SETTINGS]:
        row = report[name]
        speed = row.get("speed_1_thread", {}).get("sentences_per_s", float("nan"))
        lines.append(f"{name:<22} {row['bleu']:>6.2f} {row['chrf']:>6.2f} {speed:>7.2f}")
    return "\n".join(lines) + f"\n({report['split']} split, {report['n']} verses)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--limit", type=int, default=0, help="first N verses only (smoke runs; not for records)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--write-manifest", action="store_true", help="store the metrics in manifest.json")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts, _ = load_splits()
    pairs = parts[args.split][: args.limit or None]
    report = {"split": args.split, **evaluate_version(args.version_dir, pairs, args.batch_size)}
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else format_table(report))
    if args.write_manifest:
        if args.limit:
            raise SystemExit("--write-manifest needs the full split (no --limit)")
        # Keep what other evaluations measured apart (training/evaluate/translation_span.py).
        with_metrics(args.version_dir, report, keep=("challenge", "span_comparison"))


if __name__ == "__main__":
    main()
