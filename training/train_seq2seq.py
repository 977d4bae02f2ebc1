"""Train the English -> French seq2seq-attention model:  OMP_NUM_THREADS=1 python -m training.train_seq2seq

Same data, split, length filter, dev subset and joint tokenizer as the Transformer run
(training/train_translation.py), so the two models' curves compare directly. Everything lands in the
checkpoint directory (training/configs/translation_seq2seq.py, outside the work tree): tokenizer.json
(a copy of the Transformer's), model_config.json, data.json (split hashes), training_config.json,
last.pt / best.pt and history.json (dev chrF/BLEU against training seconds). Running the same command
again resumes from last.pt. Export: python -m training.export.translation_seq2seq.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import shutil
import time

import sacrebleu
import torch
from tokenizers import Tokenizer
from torch import nn

from training.batching import pad_batch, token_budget_batches
from training.configs import translation_seq2seq as cfg
from training.data.translation import load_splits
from training.decoding import source_ids
from training.decoding_seq2seq import translate
from training.loop import config_dict, train
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.tokenizer import BOS, EOS, PAD
from training.train_translation import Throughput, dev_subset, target_ids

log = logging.getLogger("train_seq2seq")


def load_shared_tokenizer(checkpoint_dir: pathlib.Path) -> Tokenizer:
    """The Transformer run's tokenizer, copied once; a resumed run keeps its own copy (ids must not move)."""
    path = checkpoint_dir / "tokenizer.json"
    shared = pathlib.Path(cfg.SHARED_TOKENIZER)
    if not path.exists():
        if not shared.exists():
            raise SystemExit(f"{shared} is missing: start the Transformer run first (it trains the joint BPE)")
        shutil.copyfile(shared, path)
    elif shared.exists() and shared.read_bytes() != path.read_bytes():
        log.warning("%s differs from %s: the models no longer share a tokenizer", path, shared)
    return Tokenizer.from_file(str(path))


def build_model_config(tokenizer: Tokenizer, checkpoint_dir: pathlib.Path) -> Seq2SeqConfig:
    """The config from training/configs, checked against the one saved beside an existing checkpoint."""
    config = Seq2SeqConfig(vocab_size=tokenizer.get_vocab_size(), pad_id=tokenizer.token_to_id(PAD),
                           bos_id=tokenizer.token_to_id(BOS), eos_id=tokenizer.token_to_id(EOS), **cfg.MODEL)
    path = checkpoint_dir / "model_config.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    if saved is not None and saved != dataclasses.asdict(config):
        raise SystemExit(f"{path} differs from training/configs: move the old checkpoint away to start over")
    path.write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the config (e.g. to extend a run)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--checkpoint-dir", default=None, help="override the config's checkpoint directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(cfg.LOOP.threads)  # before any torch work, not only inside the loop

    overrides = {"max_epochs": args.max_epochs, "max_steps": args.max_steps, "checkpoint_dir": args.checkpoint_dir}
    loop_config = dataclasses.replace(cfg.LOOP, **{k: v for k, v in overrides.items() if v is not None})
    checkpoint_dir = pathlib.Path(loop_config.checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    parts, data_info = load_splits(cfg.MAX_WORDS_TRAIN)
    (checkpoint_dir / "data.json").write_text(json.dumps(data_info, indent=1) + "\n")
    log.info("data %s", json.dumps(data_info))
    tokenizer = load_shared_tokenizer(checkpoint_dir)
    model_config = build_model_config(tokenizer, checkpoint_dir)
    (checkpoint_dir / "training_config.json").write_text(json.dumps(
        {**config_dict(model_config, loop_config), "batch_tokens": cfg.BATCH_TOKENS,
         "label_smoothing": cfg.LABEL_SMOOTHING, "tokenizer": cfg.SHARED_TOKENIZER, "dev_subset": cfg.DEV_SUBSET,
         "max_words_train": cfg.MAX_WORDS_TRAIN}, indent=1) + "\n")

    train_src = source_ids(tokenizer, [p.english for p in parts["train"]])
    train_tgt = target_ids(tokenizer, [p.french for p in parts["train"]])
    dev = dev_subset(parts["dev"], cfg.DEV_SUBSET)

    torch.manual_seed(loop_config.seed)
    model = Seq2SeqAttention(model_config)
    log.info("parameters %d", sum(p.numel() for p in model.parameters()))
    criterion = nn.CrossEntropyLoss(ignore_index=model_config.pad_id, label_smoothing=cfg.LABEL_SMOOTHING)
    target_lengths = [len(t) - 1 for t in train_tgt]
    throughput = Throughput()

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return token_budget_batches(target_lengths, cfg.BATCH_TOKENS, seed=loop_config.seed + epoch)

    def loss_fn(module: nn.Module, batch: list[int]) -> tuple[torch.Tensor, int]:
        src, src_mask = pad_batch([train_src[i] for i in batch], model_config.pad_id)
        tgt, tgt_mask = pad_batch([train_tgt[i] for i in batch], model_config.pad_id)
        logits = module(src, src_mask, tgt[:, :-1])  # teacher forcing: the reference prefix is the input
        loss = criterion(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1))  # mean over real tokens
        tokens = int(tgt_mask[:, 1:].sum())
        throughput.add(tokens, loss.item())
        if throughput.steps % cfg.LOG_EVERY_STEPS == 0:
            log.info("since last eval: %d steps %s", throughput.steps, json.dumps(throughput.summary()))
        return loss, tokens

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        summary = throughput.summary()
        started = time.perf_counter()
        assert isinstance(module, Seq2SeqAttention)
        hypotheses = translate(module, tokenizer, [p.english for p in dev], cfg.EVAL_BATCH)
        references = [p.french for p in dev]
        for pair, hypothesis in list(zip(dev, hypotheses, strict=True))[:2]:
            log.info("example: %s\n  -> %s\n  ref %s", pair.english, hypothesis, pair.french)
        metrics = {"chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
                   "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
                   **summary, "eval_seconds": round(time.perf_counter() - started, 1)}
        throughput.reset()
        return metrics

    result = train(model, batches_for_epoch, loss_fn, evaluate_fn, loop_config,
                   extra_state={"model_config": dataclasses.asdict(model_config), "data": data_info})
    best = torch.load(checkpoint_dir / "best.pt", weights_only=False)["metrics"]
    log.info("done: %d steps, %.0f s of training", result.steps, result.seconds)
    print(json.dumps({"best_dev": best, "checkpoint": str(checkpoint_dir / "best.pt")}, indent=1))


if __name__ == "__main__":
    main()
