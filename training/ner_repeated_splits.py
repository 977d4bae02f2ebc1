"""How much does one 240-tweet test split say? Retrain a tagger on re-drawn 80/10/10 splits.

    python -m training.ner_repeated_splits --tagger bilstm-crf --salts r1 r2 r3 r4 r5

Each salt re-orders the tweets (sha256 of salt + index + text) and cuts a fresh train/dev/test; the
tagger trains with its usual config (own checkpoint dir per salt, resumable) and is scored on that
split's test tweets with seqeval, its word tags turned into entities by the service's own BIO reading
and mapped onto the gold tokens as in training/evaluate/ner.py. These runs score the torch model (no
export per split); the published numbers of the committed versions come from the served pipeline.
Writes a JSON summary (per split and mean/sd) to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import statistics

from seqeval.metrics import f1_score

from service.pipelines.ner import TaggedWord, entities_from_tags
from training.configs.checkpoints import checkpoint_root
from training.data.ner import Tweet, read_tweets, split, split_hashes, word_tags
from training.evaluate.ner import entities_to_token_tags
from training.train_ner import RECIPES, Recipe, run_training

log = logging.getLogger("ner_repeated_splits")


def test_f1(recipe: Recipe, tweets: list[Tweet]) -> float:
    rows = recipe.encode(tweets)
    predicted = []
    for start in range(0, len(rows), 64):
        predicted += recipe.predict(recipe.model, recipe.collate(rows[start : start + 64]))
    token_tags = []
    for tweet, tags in zip(tweets, predicted, strict=True):
        words = word_tags(tweet)[0]
        tagged = [TaggedWord(w.text, w.start, w.end, tag, 1.0) for w, tag in zip(words, tags, strict=False)]
        token_tags.append(entities_to_token_tags(tweet, entities_from_tags(tweet.text, tagged)))
    return float(f1_score([list(t.tags) for t in tweets], token_tags))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tagger", choices=sorted(RECIPES), default="bilstm-crf")
    parser.add_argument("--salts", nargs="+", default=["r1", "r2", "r3", "r4", "r5"])
    parser.add_argument("--out", type=pathlib.Path, default=checkpoint_root() / "ner_repeated_splits.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    tweets, _ = read_tweets()
    _, base_config, batch_size = RECIPES[args.tagger]
    runs = []
    for salt in args.salts:
        parts = split(tweets, salt)
        config = dataclasses.replace(base_config, checkpoint_dir=f"{base_config.checkpoint_dir}-split-{salt}")
        recipe, result = run_training(args.tagger, parts, config, batch_size)
        with torch.no_grad():
            f1 = test_f1(recipe, parts["test"])
        runs.append({"salt": salt, "test_sha256": split_hashes(parts)["test"], "dev_f1": result.best_metric,
                     "test_f1": round(f1, 4), "best_epoch": result.best_epoch,
                     "train_seconds": round(result.seconds)})
        log.info("split %s: dev %.4f test %.4f", salt, result.best_metric, f1)
        summary = {"tagger": args.tagger, "runs": runs,
                   "test_f1_mean": round(statistics.mean(r["test_f1"] for r in runs), 4),
                   "test_f1_sd": round(statistics.stdev(r["test_f1"] for r in runs), 4) if len(runs) > 1 else None}
        args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
