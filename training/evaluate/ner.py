"""NER quality through the served path, beside a token-level majority baseline, and a paired comparison.

    python -m training.evaluate.ner exported/ner-bilstm-crf/1 [--split test] [--write-manifest]
    python -m training.evaluate.ner --compare exported/ner-bilstm-crf/1 exported/ner-minilm-int8/1 --set-default

The tagger runs through service.pipelines.ner.NerPipeline on each tweet's raw text (gold tokens joined
with single spaces). Its entities (character spans) are mapped back onto the gold tokens: the gold
tokens an entity overlaps get B-/I- of its type, so seqeval scores exactly the spans the service returns
(an entity cut inside a gold token still counts the whole token, which can only happen when a model
splits one gold token between two entities). Scores: seqeval entity-level micro P/R/F1 and per type
(default conlleval-style mode).

Baseline: every gold token gets the tag most often seen on that exact token in train (O if unseen).

Comparison: the F1 difference of two taggers on the same tweets with a paired bootstrap over tweets
(resample the test tweets with replacement, score both on the same resample).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import random
import time
from typing import Any

from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities

from service.batching.runs import run_pipeline
from service.model.manifest import read_manifest, republish_manifest, with_metrics
from service.pipelines.ner import Entity, NerPipeline
from service.runtime.version_loader import load_version
from training.data.ner import Tweet, load_splits

BOOTSTRAP_SAMPLES = 2000


def entities_to_token_tags(tweet: Tweet, entities: list[Entity]) -> list[str]:
    tags = ["O"] * len(tweet.tokens)
    for entity in entities:
        inside = [i for i, (s, e) in enumerate(tweet.token_spans) if s < entity.end and entity.start < e]
        for position, token in enumerate(inside):
            if tags[token] == "O":
                tags[token] = ("B-" if position == 0 else "I-") + entity.type
    return tags


def served_tags(version_dir: pathlib.Path, tweets: list[Tweet], batch_size: int = 32) -> dict[str, Any]:
    """Predicted gold-token tags per tweet, plus the offset check and the time it took."""
    pipeline = NerPipeline(load_version(version_dir))
    predicted, offset_errors, n_entities = [], 0, 0
    started = time.perf_counter()
    for start in range(0, len(tweets), batch_size):
        chunk = tweets[start : start + batch_size]
        for tweet, prediction in zip(chunk, run_pipeline(pipeline, [t.text for t in chunk]), strict=True):
            n_entities += len(prediction.entities)
            offset_errors += sum(tweet.text[e.start : e.end] != e.text for e in prediction.entities)
            predicted.append(entities_to_token_tags(tweet, prediction.entities))
    seconds = time.perf_counter() - started
    return {"tags": predicted, "offset_errors": offset_errors, "entities": n_entities,
            "ms_per_tweet": round(1000 * seconds / len(tweets), 2)}


def majority_tags(train: list[Tweet], tweets: list[Tweet]) -> list[list[str]]:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for tweet in train:
        for token, tag in zip(tweet.tokens, tweet.tags, strict=True):
            counts[token][tag] += 1
    return [[counts[token].most_common(1)[0][0] if token in counts else "O" for token in t.tokens] for t in tweets]


def score(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    rounded = {name: {k: round(float(v), 4) if k != "support" else int(v) for k, v in row.items()}
               for name, row in report.items()}
    micro = rounded.pop("micro avg")
    for key in ("macro avg", "weighted avg"):
        rounded.pop(key, None)
    return {"micro": micro, "per_type": rounded}


def evaluate_version(version_dir: pathlib.Path, tweets: list[Tweet], train: list[Tweet]) -> dict[str, Any]:
    gold = [list(t.tags) for t in tweets]
    served = served_tags(version_dir, tweets)
    return {
        "split": "test",
        "tweets": len(tweets),
        "gold_entities": sum(len(get_entities(g)) for g in gold),
        "served": {**score(gold, served["tags"]), "offset_errors": served["offset_errors"],
                   "ms_per_tweet_batch32": served["ms_per_tweet"]},
        "majority_baseline": score(gold, majority_tags(train, tweets)),
    }


def _counts(gold: list[str], predicted: list[str]) -> tuple[int, int, int]:
    gold_set, predicted_set = set(get_entities(gold)), set(get_entities(predicted))
    return len(gold_set & predicted_set), len(predicted_set), len(gold_set)


def _f1(rows: list[tuple[int, int, int]]) -> float:
    correct, predicted, gold = (sum(column) for column in zip(*rows, strict=True))
    return 2 * correct / (predicted + gold) if predicted + gold else 0.0


def paired_bootstrap(gold: list[list[str]], a: list[list[str]], b: list[list[str]],
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = 13) -> dict[str, float | list[float]]:
    """F1(a) - F1(b) on the test tweets, with its 95% bootstrap interval and how often a wins."""
    counts_a = [_counts(g, p) for g, p in zip(gold, a, strict=True)]
    counts_b = [_counts(g, p) for g, p in zip(gold, b, strict=True)]
    rng = random.Random(seed)
    f1_a, f1_b, differences = [], [], []
    for _ in range(samples):
        picks = [rng.randrange(len(gold)) for _ in gold]
        f1_a.append(_f1([counts_a[i] for i in picks]))
        f1_b.append(_f1([counts_b[i] for i in picks]))
        differences.append(f1_a[-1] - f1_b[-1])

    def interval(values: list[float]) -> list[float]:
        ordered = sorted(values)
        return [round(ordered[int(0.025 * samples)], 4), round(ordered[int(0.975 * samples) - 1], 4)]

    return {
        "f1_a": round(_f1(counts_a), 4), "f1_b": round(_f1(counts_b), 4),
        "f1_a_ci95": interval(f1_a), "f1_b_ci95": interval(f1_b),
        "difference": round(_f1(counts_a) - _f1(counts_b), 4),
        "difference_ci95": interval(differences),
        "share_a_better": round(sum(d > 0 for d in differences) / samples, 4),
        "samples": samples,
    }


def compare(dir_a: pathlib.Path, dir_b: pathlib.Path, tweets: list[Tweet]) -> dict[str, Any]:
    gold = [list(t.tags) for t in tweets]
    tags_a, tags_b = served_tags(dir_a, tweets)["tags"], served_tags(dir_b, tweets)["tags"]
    result = paired_bootstrap(gold, tags_a, tags_b)
    return {"a": read_manifest(dir_a).name, "b": read_manifest(dir_b).name, **result}


def set_default(winner: pathlib.Path, others: list[pathlib.Path], comparison: dict[str, Any]) -> None:
    """The better tagger on test F1 through the served path becomes the task default."""
    for version_dir in [winner, *others]:
        republish_manifest(version_dir, {"default_for_task": version_dir == winner, "comparison": comparison})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path, nargs="?")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--write-manifest", action="store_true", help="store the metrics in manifest.json")
    parser.add_argument("--compare", type=pathlib.Path, nargs=2, metavar=("A", "B"))
    parser.add_argument("--set-default", action="store_true", help="with --compare: the better one is default")
    args = parser.parse_args()
    parts, _ = load_splits()
    if args.compare:
        dir_a, dir_b = args.compare
        comparison = compare(dir_a, dir_b, parts[args.split])
        comparison["split"] = args.split
        print(json.dumps(comparison, indent=1))
        if args.set_default:
            a, b = args.compare
            winner, loser = (a, b) if comparison["difference"] >= 0 else (b, a)
            set_default(winner, [loser], comparison)
        return
    report = evaluate_version(args.version_dir, parts[args.split], parts["train"])
    report["split"] = args.split
    print(json.dumps(report, indent=1))
    if args.write_manifest:
        with_metrics(args.version_dir, report)


if __name__ == "__main__":
    main()
