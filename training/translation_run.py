"""One translation training run, whatever the architecture (Transformer or seq2seq-attention).

Both runs share the data, split, length filter, dev subset, batching by target tokens, loss, dev
metrics and checkpoint layout, so their curves compare directly; a `TranslationRecipe` names only what
differs: the config module, the model class, where the tokenizer comes from, and the torch decoder
used for dev translations. Everything lands in the config's checkpoint directory (outside the work
tree): tokenizer.json, model_config.json, data.json (split hashes), training_config.json, last.pt /
best.pt and history.json (dev chrF/BLEU against training seconds). Running the same command again
resumes from last.pt with the saved tokenizer.

`run` is the committed English -> French command line (the packaged Bible pairs); `train_pairs` is the
run itself on any split of pairs, which training/byo/translation.py calls with the user's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import sacrebleu
import torch
from tokenizers import Tokenizer
from torch import nn

from training.batching import pad_batch, token_budget_batches
from training.data.translation import TranslationPair, load_splits
from training.decoding import source_ids
from training.loop import LoopConfig, TrainResult, config_dict, train
from training.token_ids import special_id
from training.tokenizer import BOS, EOS, PAD


@dataclass(frozen=True)
class TranslationRecipe:
    name: str                      # the logger's name
    # training/configs/translation_*.py (MODEL, LOOP, BATCH_TOKENS, ...), or the same attributes sized
    # from the user's data at run time (training/byo/translation.py)
    cfg: ModuleType | SimpleNamespace
    model_class: Callable[[Any], nn.Module]
    config_class: Callable[..., Any]
    # (checkpoint dir, train pairs) -> the tokenizer, saved as checkpoint_dir/tokenizer.json
    tokenizer: Callable[[pathlib.Path, Sequence[TranslationPair]], Tokenizer]
    tokenizer_setting: Any         # recorded in training_config.json
    translate: Callable[..., list[str]]  # training/decoding*.py translate(model, tokenizer, texts, batch)


def target_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """[BOS] ids [EOS]: the decoder reads [:-1] and predicts [1:]."""
    bos, eos = special_id(tokenizer, BOS), special_id(tokenizer, EOS)
    return [[bos, *enc.ids, eos] for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def dev_subset(pairs: Sequence[TranslationPair], size: int) -> list[TranslationPair]:
    """A fixed sample of dev pairs (verses), chosen by hash of their key so it does not depend on file order."""
    def key(p: TranslationPair) -> str:
        return hashlib.sha256(p.key.encode()).hexdigest()

    return sorted(pairs, key=key)[:size]


class Throughput:
    """Target tokens and loss since the last evaluation (the loop only shows loss in tqdm)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started, self.tokens, self.loss_sum, self.steps = time.perf_counter(), 0, 0.0, 0

    def add(self, tokens: int, loss: float) -> None:
        self.tokens, self.loss_sum, self.steps = self.tokens + tokens, self.loss_sum + loss, self.steps + 1

    def summary(self) -> dict[str, float]:
        seconds = time.perf_counter() - self.started
        return {"train_loss": round(self.loss_sum / max(1, self.steps), 4),
                "train_tokens_per_s": round(self.tokens / max(seconds, 1e-9), 1)}


def build_model_config(recipe: TranslationRecipe, tokenizer: Tokenizer, checkpoint_dir: pathlib.Path) -> Any:
    """The config from training/configs, checked against the one saved beside an existing checkpoint."""
    config = recipe.config_class(vocab_size=tokenizer.get_vocab_size(), pad_id=tokenizer.token_to_id(PAD),
                                 bos_id=tokenizer.token_to_id(BOS), eos_id=tokenizer.token_to_id(EOS),
                                 **recipe.cfg.MODEL)
    path = checkpoint_dir / "model_config.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    if saved is not None and saved != dataclasses.asdict(config):
        raise SystemExit(f"{path} differs from training/configs: move the old checkpoint away to start over")
    path.write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    return config


def run(recipe: TranslationRecipe, argv: Sequence[str] | None = None, description: str = "") -> None:
    cfg = recipe.cfg
    log = logging.getLogger(recipe.name)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the config (e.g. to extend a run)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--checkpoint-dir", default=None, help="override the config's checkpoint directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(cfg.LOOP.threads)  # before any torch work, not only inside the loop

    overrides = {"max_epochs": args.max_epochs, "max_steps": args.max_steps, "checkpoint_dir": args.checkpoint_dir}
    loop_config = dataclasses.replace(cfg.LOOP, **{k: v for k, v in overrides.items() if v is not None})
    checkpoint_dir = pathlib.Path(loop_config.checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    parts, data_info = load_splits(cfg.MAX_WORDS_TRAIN)
    result = train_pairs(recipe, loop_config, parts, data_info)
    best = torch.load(checkpoint_dir / "best.pt", weights_only=False)["metrics"]
    log.info("done: %d steps, %.0f s of training", result.steps, result.seconds)
    print(json.dumps({"best_dev": best, "checkpoint": str(checkpoint_dir / "best.pt")}, indent=1))


def train_pairs(recipe: TranslationRecipe, loop_config: LoopConfig,
                parts: Mapping[str, Sequence[TranslationPair]], data_info: dict[str, str]) -> TrainResult:
    """Train on parts["train"], score parts["dev"] each evaluation; everything lands in the checkpoint dir."""
    cfg = recipe.cfg
    log = logging.getLogger(recipe.name)
    checkpoint_dir = pathlib.Path(loop_config.checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / "data.json").write_text(json.dumps(data_info, indent=1) + "\n")
    log.info("data %s", json.dumps(data_info))
    tokenizer = recipe.tokenizer(checkpoint_dir, parts["train"])
    model_config = build_model_config(recipe, tokenizer, checkpoint_dir)
    (checkpoint_dir / "training_config.json").write_text(json.dumps(
        {**config_dict(model_config, loop_config), "batch_tokens": cfg.BATCH_TOKENS,
         "label_smoothing": cfg.LABEL_SMOOTHING, "tokenizer": recipe.tokenizer_setting,
         "dev_subset": cfg.DEV_SUBSET, "max_words_train": cfg.MAX_WORDS_TRAIN}, indent=1) + "\n")

    train_src = source_ids(tokenizer, [p.source for p in parts["train"]])
    train_tgt = target_ids(tokenizer, [p.target for p in parts["train"]])
    dev = dev_subset(parts["dev"], cfg.DEV_SUBSET)

    torch.manual_seed(loop_config.seed)
    model = recipe.model_class(model_config)
    log.info("parameters %d", sum(p.numel() for p in model.parameters()))
    criterion = nn.CrossEntropyLoss(ignore_index=model_config.pad_id, label_smoothing=cfg.LABEL_SMOOTHING)
    target_lengths = [len(t) - 1 for t in train_tgt]
    throughput = Throughput()

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return token_budget_batches(target_lengths, cfg.BATCH_TOKENS, seed=loop_config.seed + epoch)

    def loss_fn(module: nn.Module, batch: list[int]) -> tuple[torch.Tensor, int]:
        src, src_mask = pad_batch([train_src[i] for i in batch], model_config.pad_id)
        tgt, tgt_mask = pad_batch([train_tgt[i] for i in batch], model_config.pad_id)
        # Teacher forcing: the reference prefix is the input, the next token the target.
        logits = module(src, src_mask, tgt[:, :-1], tgt_mask[:, :-1])
        loss = criterion(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1))  # mean over real tokens
        tokens = int(tgt_mask[:, 1:].sum())
        throughput.add(tokens, loss.item())
        if throughput.steps % cfg.LOG_EVERY_STEPS == 0:
            log.info("since last eval: %d steps %s", throughput.steps, json.dumps(throughput.summary()))
        return loss, tokens

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        summary = throughput.summary()
        started = time.perf_counter()
        hypotheses = recipe.translate(module, tokenizer, [p.source for p in dev], cfg.EVAL_BATCH)
        references = [p.target for p in dev]
        for pair, hypothesis in list(zip(dev, hypotheses, strict=True))[:2]:
            log.info("example: %s\n  -> %s\n  ref %s", pair.source, hypothesis, pair.target)
        metrics = {"chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
                   "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
                   **summary, "eval_seconds": round(time.perf_counter() - started, 1)}
        throughput.reset()
        return metrics

    return train(model, batches_for_epoch, loss_fn, evaluate_fn, loop_config,
                 extra_state={"model_config": dataclasses.asdict(model_config), "data": data_info})
