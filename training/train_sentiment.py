"""Train, export and evaluate the sentiment model:  python -m training.train_sentiment [--version N]

Writes exported/sentiment-bigru/<N>/ (model.onnx, tokenizer.json, labels.json, manifest.json with the
test metrics measured through the service's own pipeline). Resumes from checkpoints/ if interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import shutil

import torch
from tokenizers import Tokenizer
from torch import nn

from service.repository.manifest import write_manifest
from training.batching import bucketed_batches, pad_batch
from training.configs import sentiment as cfg
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
from training.tokenizer import PAD, UNK, train_bpe

log = logging.getLogger("train_sentiment")


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    unk = tokenizer.token_to_id(UNK)
    return [enc.ids[: cfg.MAX_TOKENS] or [unk] for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", default="exported")
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    parts, data_info = load_splits()
    checkpoint_dir = pathlib.Path(cfg.LOOP.checkpoint_dir)
    # Trained once (by rank 0 under torchrun) and reused on resume: the ids must mean what they meant.
    tokenizer_path = checkpoint_dir / "tokenizer.json"
    train_texts = [s.text for s in parts["train"]]
    build_once(tokenizer_path, lambda path: train_bpe(train_texts, **cfg.TOKENIZER).save(str(path)))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    pad_id = tokenizer.token_to_id(PAD)

    train_ids = encode(tokenizer, [s.text for s in parts["train"]])
    train_labels = [s.label for s in parts["train"]]
    dev_ids = encode(tokenizer, [s.text for s in parts["dev"]])
    dev_labels = [s.label for s in parts["dev"]]

    counts = torch.bincount(torch.tensor(train_labels), minlength=len(LABELS)).float()
    class_weights = counts.sum() / (len(LABELS) * counts)  # balanced: macro-F1 weighs classes equally
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.LABEL_SMOOTHING)

    model_config = SentimentModelConfig(vocab_size=tokenizer.get_vocab_size(), num_labels=len(LABELS),
                                        pad_id=pad_id, **cfg.MODEL)
    torch.manual_seed(cfg.LOOP.seed)
    model = BiGRUAttentionClassifier(model_config)
    loop_config = cfg.LOOP if args.max_epochs is None else cfg.LOOP.__class__(
        **{**cfg.LOOP.__dict__, "max_epochs": args.max_epochs})

    lengths = [len(x) for x in train_ids]

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return bucketed_batches(lengths, cfg.BATCH_SIZE, seed=loop_config.seed + epoch)

    def loss_fn(module: nn.Module, batch: list[int]) -> tuple[torch.Tensor, int]:
        ids, mask = pad_batch([train_ids[i] for i in batch], pad_id)
        logits, _ = module(ids, mask)
        return criterion(logits, torch.tensor([train_labels[i] for i in batch])), len(batch)

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
