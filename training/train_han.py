"""Train and export the document model:  python -m training.train_han [--version N]

Writes exported/han-vader-docs/<N>/ (model.onnx, tokenizer.json, labels.json, manifest.json with the
torch-vs-onnxruntime parity). The test metrics through the served pipeline are measured and stored by
the next step, `python -m training.evaluate.documents exported/han-vader-docs/<N> --write-manifest`.
Resumes from checkpoints/ if interrupted (docs/han.md).
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
from training.batching import bucketed_batches, pad_batch, token_budget_batches
from training.configs import han as cfg
from training.data.documents import Document, load_document_splits
from training.data.sentiment import LABELS
from training.data.sentiment import load_splits as load_sentence_splits
from training.export.han import export_han, han_parity
from training.export.onnx_export import OPSET, describe_io
from training.loop import config_dict, train
from training.metrics import macro_f1
from training.models.han import HanConfig, HierarchicalAttentionNetwork
from training.token_ids import special_id
from training.tokenizer import PAD, UNK

log = logging.getLogger("train_han")


def encode_sentences(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Subword ids of each sentence, cut at MAX_SENTENCE_TOKENS; a sentence the normaliser empties is [unk]."""
    unk = special_id(tokenizer, UNK)
    return [enc.ids[: cfg.MAX_SENTENCE_TOKENS] or [unk]
            for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def pad_documents(documents: list[list[list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [D, S, W] and the 0/1 mask of documents given as lists of sentence ids."""
    sentences = max(len(d) for d in documents)
    words = max(len(s) for d in documents for s in d)
    ids = torch.full((len(documents), sentences, words), pad_id, dtype=torch.long)
    mask = torch.zeros((len(documents), sentences, words), dtype=torch.long)
    for i, document in enumerate(documents):
        for j, sentence in enumerate(document):
            ids[i, j, : len(sentence)] = torch.tensor(sentence, dtype=torch.long)
            mask[i, j, : len(sentence)] = 1
    return ids, mask


def balanced_weights(labels: list[int]) -> torch.Tensor:
    """Class weights inversely proportional to frequency: macro-F1 weighs classes equally."""
    counts = torch.bincount(torch.tensor(labels), minlength=len(LABELS)).float()
    return counts.sum() / (len(LABELS) * counts.clamp(min=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", default="exported")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--checkpoint-dir", default=None, help="overrides the config's (for experiments)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    parts, data_info = load_document_splits()
    overrides = {"max_epochs": args.max_epochs, "checkpoint_dir": args.checkpoint_dir}
    loop_config = dataclasses.replace(cfg.LOOP, **{k: v for k, v in overrides.items() if v is not None})
    checkpoint_dir = pathlib.Path(loop_config.checkpoint_dir)
    tokenizer_path = pathlib.Path(cfg.TOKENIZER_FILE)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    pad_id = special_id(tokenizer, PAD)

    def encode_documents(documents: list[Document]) -> list[list[list[int]]]:
        return [encode_sentences(tokenizer, [s.text for s in d.sentences]) for d in documents]

    train_docs, dev_docs = encode_documents(parts["train"]), encode_documents(parts["dev"])
    train_doc_labels = [d.label for d in parts["train"]]
    train_sentence_labels = [[s.label for s in d.sentences] for d in parts["train"]]
    dev_labels = [d.label for d in parts["dev"]]

    extra = [s for s in load_sentence_splits()[0]["train"] if s.domain in cfg.EXTRA_DOMAINS]
    extra = extra if cfg.EXTRA_SENTENCES_WEIGHT else []
    extra_ids = encode_sentences(tokenizer, [s.text for s in extra])
    extra_labels = [s.label for s in extra]

    document_criterion = nn.CrossEntropyLoss(weight=balanced_weights(train_doc_labels),
                                             label_smoothing=cfg.LABEL_SMOOTHING)
    all_sentence_labels = [label for labels in train_sentence_labels for label in labels]
    sentence_criterion = nn.CrossEntropyLoss(weight=balanced_weights(all_sentence_labels + extra_labels),
                                             label_smoothing=cfg.LABEL_SMOOTHING)

    model_config = HanConfig(vocab_size=tokenizer.get_vocab_size(), num_labels=len(LABELS), pad_id=pad_id,
                             **cfg.MODEL)
    torch.manual_seed(loop_config.seed)
    model = HierarchicalAttentionNetwork(model_config)
    costs = [len(d) * max(len(s) for s in d) for d in train_docs]

    def batches_for_epoch(epoch: int) -> list[tuple[str, list[int]]]:
        seed = loop_config.seed + epoch
        batches = [("documents", b) for b in token_budget_batches(costs, cfg.BATCH_TOKEN_BUDGET, seed=seed)]
        if extra_ids:
            batches += [("sentences", b) for b in
                        bucketed_batches([len(x) for x in extra_ids], cfg.EXTRA_BATCH_SIZE, seed=seed)]
            random.Random(seed).shuffle(batches)
        return batches

    def loss_fn(module: nn.Module, batch: tuple[str, list[int]]) -> tuple[torch.Tensor, int]:
        source, rows = batch
        if source == "sentences":  # one-sentence documents: only the sentence head is supervised
            ids, mask = pad_batch([extra_ids[i] for i in rows], pad_id)
            out = module(ids.unsqueeze(1), mask.unsqueeze(1))
            loss = sentence_criterion(out.sentence_logits[:, 0], torch.tensor([extra_labels[i] for i in rows]))
            return cfg.EXTRA_SENTENCES_WEIGHT * loss, len(rows)
        ids, mask = pad_documents([train_docs[i] for i in rows], pad_id)
        out = module(ids, mask)
        document_loss = document_criterion(out.document_logits, torch.tensor([train_doc_labels[i] for i in rows]))
        sentence_mask = mask.sum(dim=2) > 0
        gold = torch.full(sentence_mask.shape, -100, dtype=torch.long)
        for row, i in enumerate(rows):
            gold[row, : len(train_sentence_labels[i])] = torch.tensor(train_sentence_labels[i])
        sentence_loss = sentence_criterion(out.sentence_logits.reshape(-1, len(LABELS)), gold.reshape(-1))
        return document_loss + cfg.SENTENCE_LOSS_WEIGHT * sentence_loss, len(rows)

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        predicted: list[int] = []
        for start in range(0, len(dev_docs), 8):
            ids, mask = pad_documents(dev_docs[start : start + 8], pad_id)
            predicted += module(ids, mask).document_logits.argmax(-1).tolist()
        return {"macro_f1": round(macro_f1(dev_labels, predicted, len(LABELS)), 4)}

    result = train(model, batches_for_epoch, loss_fn, evaluate_fn, loop_config)
    log.info("best dev document macro-F1 %.4f at epoch %d after %d steps, %.0f s",
             result.best_metric, result.best_epoch, result.steps, result.seconds)

    model.load_state_dict(torch.load(checkpoint_dir / "best.pt", weights_only=False)["model"])
    model.eval()
    version_dir = pathlib.Path(args.out) / cfg.MODEL_NAME / args.version
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    example_ids, example_mask = pad_documents(dev_docs[:3], pad_id)
    onnx_model = export_han(model, example_ids, example_mask, version_dir / "model.onnx")
    parity_ids, parity_mask = pad_documents(dev_docs, pad_id)
    parity = han_parity(model, version_dir / "model.onnx", parity_ids, parity_mask)
    if not parity["passed"]:
        raise SystemExit(f"export parity failed: {json.dumps(parity)}")
    shutil.copy(tokenizer_path, version_dir / "tokenizer.json")
    (version_dir / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")
    manifest_data = {
        "name": cfg.MODEL_NAME,
        "version": args.version,
        "task": "document",
        "default_for_task": True,
        "description": "Hierarchical attention network (word BiGRU + attention -> sentence vectors, sentence "
                       "BiGRU + attention -> document vector) trained from scratch on VADER's Amazon reviews "
                       "and NYT editorials, with document and sentence supervision.",
        "onnx": {"file": "model.onnx", "opset": OPSET, **describe_io(onnx_model)},
        "tokenizer": "tokenizer.json",
        "labels": list(LABELS),
        "special_tokens": {"pad_id": pad_id, "unk_id": tokenizer.token_to_id(UNK), "unk": UNK},
        "limits": {"max_tokens": cfg.MAX_SENTENCE_TOKENS, "max_sentences": cfg.MAX_SENTENCES},
        "data": {"source": "vaderSentiment==3.3.2 sdist, hutto_ICWSM_2014 ground truth, Amazon and NYT files",
                 "document_label": "3-class label of the mean of the sentences' human scores "
                                   "(<= -0.5 negative, >= +0.5 positive, else neutral)",
                 "split": "by document, per domain ordered by sha256(domain/doc), 80/10/10",
                 "extra_sentences": {"domains": list(cfg.EXTRA_DOMAINS), "n": len(extra),
                                     "split": "train part of the sentence model's split"},
                 **data_info},
        "training": {**config_dict(model_config, loop_config),
                     "tokenizer_from": cfg.TOKENIZER_FILE, "batch_token_budget": cfg.BATCH_TOKEN_BUDGET,
                     "sentence_loss_weight": cfg.SENTENCE_LOSS_WEIGHT,
                     "extra_sentences_weight": cfg.EXTRA_SENTENCES_WEIGHT, "label_smoothing": cfg.LABEL_SMOOTHING,
                     "best_dev_macro_f1": result.best_metric, "best_epoch": result.best_epoch,
                     "steps": result.steps, "train_seconds": round(result.seconds),
                     "parameters": sum(p.numel() for p in model.parameters()), "history": result.history},
        "export_parity": parity,
        "sample_inputs": [d.text for d in parts["dev"][:2]],
    }
    write_manifest(version_dir, manifest_data)
    print(json.dumps(parity, indent=1))


if __name__ == "__main__":
    main()
