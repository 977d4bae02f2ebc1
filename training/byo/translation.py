"""translation: any language pair, from a TSV (source<TAB>target) or two line-aligned files.

    python -m training.train translation --data pairs.tsv --name en-el --source-lang en --target-lang el
    python -m training.train translation --data train.en --target-data train.el --name en-el ...

The file is checked first (training/byo/translation_data.py), split 80/10/10 by source text, a joint
BPE with byte fallback is trained on the training pairs (no character becomes [UNK]: one the data
never had is spelled as its UTF-8 bytes), the model (`--model transformer`, the default, or `seq2seq`,
the GRU with attention) is sized from the data and the CPU and trained through the same run as the
committed English -> French models (training/translation_run.py: resumable, DDP under torchrun), exported
through their exporters, scored on the test pairs through the served pipeline against the copy-source
baseline, and published as <out>/<name>/<version>. docs/your-own-models.md is the tutorial.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import re
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
from tokenizers import Tokenizer

from service.model.manifest import read_manifest, write_manifest
from training.byo.common import add_common_arguments, check_name, file_sha256, version_dir
from training.byo.translation_data import TextPair, read_pairs, split_pairs
from training.configs import translation_seq2seq, translation_transformer
from training.configs.checkpoints import checkpoint_dir
from training.data.translation import TranslationPair
from training.decoding import translate as translate_transformer
from training.decoding_seq2seq import translate as translate_seq2seq
from training.evaluate.translation import evaluate_version
from training.export import translation_seq2seq as export_seq2seq
from training.export import translation_transformer as export_transformer
from training.export.translation_version import Corpus
from training.loop import LoopConfig, build_once, distributed_context
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.models.transformer import Transformer, TransformerConfig
from training.tokenizer import train_joint_bpe
from training.translation_run import TranslationRecipe, train_pairs

log = logging.getLogger("byo.translation")

ARCHITECTURES = ("transformer", "seq2seq")
LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")  # BCP 47 shaped: en, el, pt-BR, sr-Latn


@dataclasses.dataclass(frozen=True)
class Size:
    """One rung of the sizing ladder: what a model of this many training pairs gets."""

    name: str
    up_to_pairs: int             # this rung serves data sets below this many training pairs
    vocab_size: int              # joint BPE, the 256 byte tokens and 4 special tokens included
    transformer: dict[str, Any]
    seq2seq: dict[str, Any]
    batch_tokens: int
    max_epochs: int


# Tiny data gets a tiny model: a few hundred pairs cannot fit the committed 7.6M-parameter Transformer
# without memorising them, and a smaller one trains in minutes. The last rung is the committed models'
# config (training/configs/translation_*.py), which trains ~12 minutes an epoch on 28k pairs alone.
SIZES = (
    Size("tiny", 2_000, 1_000, {"d_model": 64, "num_heads": 2, "d_ff": 256, "encoder_layers": 2,
                                "decoder_layers": 2, "dropout": 0.1},
         {"embedding_dim": 64, "encoder_hidden": 64, "decoder_hidden": 128, "attention_dim": 64, "dropout": 0.2},
         batch_tokens=1_000, max_epochs=60),
    Size("small", 20_000, 4_000, {"d_model": 128, "num_heads": 4, "d_ff": 512, "encoder_layers": 3,
                                  "decoder_layers": 3, "dropout": 0.1},
         {"embedding_dim": 128, "encoder_hidden": 128, "decoder_hidden": 256, "attention_dim": 128, "dropout": 0.3},
         batch_tokens=2_000, max_epochs=30),
    Size("base", 0, translation_transformer.TOKENIZER["vocab_size"], translation_transformer.MODEL,
         translation_seq2seq.MODEL, batch_tokens=translation_transformer.BATCH_TOKENS, max_epochs=10),
)
# The base rung needs cores: on 2 of them an epoch of 28k pairs is 12-30 minutes, so a machine with fewer
# than this many trains the small model even on large data (--threads raises the count it sees).
BASE_MIN_CORES = 4
MIN_STEPS_PER_EPOCH, MIN_BATCH_TOKENS = 25, 150


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def choose_size(train_pairs: int, cores: int) -> Size:
    for size in SIZES[:-1]:
        if train_pairs < size.up_to_pairs:
            return size
    return SIZES[-1] if cores >= BASE_MIN_CORES else SIZES[-2]


def output_budget(pairs: Sequence[TextPair]) -> float:
    """The served default output length, target tokens per source token: the 99th percentile of the
    training pairs' character ratio, with 30% slack (the committed English -> French uses 1.5)."""
    ratios = sorted(len(p.target) / max(1, len(p.source)) for p in pairs)
    return round(min(8.0, max(1.0, ratios[int(0.99 * (len(ratios) - 1))] * 1.3)), 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", choices=ARCHITECTURES, default="transformer",
                        help="transformer (default) or seq2seq (bidirectional GRU encoder, attention decoder)")
    parser.add_argument("--target-data", type=pathlib.Path, default=None,
                        help="the target side as a file line-aligned with --data (then --data is the source side)")
    parser.add_argument("--source-lang", required=True, help="source language code (BCP 47: en, el, pt-BR)")
    parser.add_argument("--target-lang", required=True, help="target language code")
    parser.add_argument("--size", choices=[s.name for s in SIZES], default="",
                        help="model size (default: from the number of training pairs and the cores)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0: none)")
    parser.add_argument("--checkpoint-dir", type=pathlib.Path, default=None,
                        help="default: byo-translation/<name>-<model>-<data sha256> under the checkpoint root")


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Everything decided before training: checked data, split, sizes, folders. Raises on bad input."""
    check_name(args.name)
    for flag, code in (("--source-lang", args.source_lang), ("--target-lang", args.target_lang)):
        if not LANGUAGE_CODE.match(code):
            raise ValueError(f"{flag} {code!r}: use a language code such as en, el or pt-BR")
    for path in (args.data, args.target_data):
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file")
    pairs = read_pairs(args.data, args.target_data)
    split, split_info = split_pairs(pairs, args.data)
    cores = args.threads or available_cores()
    size = next(s for s in SIZES if s.name == args.size) if args.size else choose_size(len(split.train), cores)
    data_sha = file_sha256(args.data) + (f"+{file_sha256(args.target_data)}" if args.target_data else "")
    folder = args.checkpoint_dir or pathlib.Path(checkpoint_dir(
        f"byo-translation/{args.name}-{args.model}-{size.name}-{data_sha[:12]}"))
    out = version_dir(args.out, args.name, args.version)
    if out.exists():  # a published version may be serving: never overwritten
        raise ValueError(f"{out} already exists: pick another --version, or leave it out for the next number")
    return {"pairs": pairs, "split": split, "size": size, "threads": cores, "checkpoint_dir": folder,
            "out": out, "output_ratio": output_budget(split.train),
            "data": {"data_sha256": data_sha, "pairs": str(len(pairs)), **split_info,
                     "split": "80/10/10 by sha256 of the source text (a repeated source stays in one part)"}}


def recipe_for(args: argparse.Namespace, settings: dict[str, Any]) -> tuple[TranslationRecipe, LoopConfig]:
    size: Size = settings["size"]
    folder: pathlib.Path = settings["checkpoint_dir"]
    vocab: dict[str, Any] = {"vocab_size": size.vocab_size, "min_frequency": 2, "byte_fallback": True}

    def tokenizer(checkpoint: pathlib.Path, train: Sequence[TranslationPair]) -> Tokenizer:
        # Rank 0 trains it once; a resumed run reads the saved one (the ids must mean what they meant).
        build_once(checkpoint / "tokenizer.json", lambda path: train_joint_bpe(
            [t for p in train for t in (p.source, p.target)], vocab_size=size.vocab_size, min_frequency=2,
            byte_fallback=True).save(str(path)))
        return Tokenizer.from_file(str(checkpoint / "tokenizer.json"))

    transformer = args.model == "transformer"
    # Small data gets smaller batches, so an epoch still has MIN_STEPS_PER_EPOCH steps (a few hundred
    # pairs fill only 2-3 batches of the rung's size, and early stopping would then judge a handful of
    # steps); warm-up lasts two epochs at most. Subwords estimated as 1.3 per word, plus [EOS].
    target_tokens = sum(int(1.3 * len(p.target.split())) + 1 for p in settings["split"].train)
    batch_tokens = min(size.batch_tokens, max(MIN_BATCH_TOKENS, target_tokens // MIN_STEPS_PER_EPOCH))
    steps_per_epoch = max(1, target_tokens // batch_tokens)
    loop = LoopConfig(
        max_epochs=args.max_epochs or size.max_epochs, max_steps=args.max_steps,
        learning_rate=1e-3 if transformer else 2e-3, weight_decay=1e-4,
        warmup_steps=min(400, 2 * steps_per_epoch),
        lr_schedule="inverse_sqrt", grad_clip=1.0, patience=5 if size.name == "tiny" else 3, metric="chrf",
        seed=13 + args.seed, threads=settings["threads"], checkpoint_dir=str(folder),
        evaluate_every_steps=0 if size.name == "tiny" else 250)
    cfg = SimpleNamespace(  # the attributes of training/configs/translation_*.py, sized from the data
        MODEL=size.transformer if transformer else size.seq2seq, MAX_WORDS_TRAIN=0,
        BATCH_TOKENS=batch_tokens, LABEL_SMOOTHING=0.1, DEV_SUBSET=300, EVAL_BATCH=50, LOG_EVERY_STEPS=50,
        LOOP=loop)
    recipe = TranslationRecipe(
        name="byo.translation", cfg=cfg, model_class=Transformer if transformer else Seq2SeqAttention,
        config_class=TransformerConfig if transformer else Seq2SeqConfig, tokenizer=tokenizer,
        tokenizer_setting=vocab, translate=translate_transformer if transformer else translate_seq2seq)
    return recipe, loop


def publish(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """Export the best checkpoint into the version folder, then score the test pairs through the served
    pipeline (greedy, beam 4, and the copy-source baseline) into its manifest."""
    folder, out = settings["checkpoint_dir"], settings["out"]
    corpus = Corpus(
        summary=f"{args.source_lang} -> {args.target_lang} ({args.data.name}"
                f"{' + ' + args.target_data.name if args.target_data else ''}, {settings['size'].name} size)",
        data_source=str(args.data.resolve()) + (f" + {args.target_data.resolve()}" if args.target_data else ""),
        source_language=args.source_lang, target_language=args.target_lang,
        sample_inputs=tuple(p.source for p in settings["split"].train[:2]),
        max_output_ratio=settings["output_ratio"], extra_data={"format": "two aligned files" if args.target_data
                                                              else "TSV: source<TAB>target"})
    exporter = export_transformer if args.model == "transformer" else export_seq2seq
    exporter.export_version(folder, out, args.name, corpus=corpus, default_for_task=False)
    report = {"split": "test", **evaluate_version(out, settings["split"].test)}
    manifest = read_manifest(out)
    write_manifest(out, {**manifest.data, "metrics": report})
    return report


def run(args: argparse.Namespace) -> int:
    settings = plan(args)
    size: Size = settings["size"]
    summary = {"task": "translation", "model": args.model, "size": size.name, "pairs": len(settings["pairs"]),
               **{f"{k}_pairs": len(v) for k, v in settings["split"].parts().items()},
               "vocab_size": size.vocab_size, "threads": settings["threads"],
               "checkpoint_dir": str(settings["checkpoint_dir"]), "out": str(settings["out"]),
               "languages": f"{args.source_lang} -> {args.target_lang}"}
    if args.dry_run:
        print(json.dumps({"dry_run": True, **summary}, indent=1))
        return 0
    torch.set_num_threads(settings["threads"])  # before any torch work
    recipe, loop = recipe_for(args, settings)
    started = time.perf_counter()
    parts = settings["split"].parts()
    result = train_pairs(recipe, loop, parts, settings["data"])
    rank, _ = distributed_context()
    if rank != 0:
        return 0  # rank 0 publishes
    report = publish(args, settings)
    print(json.dumps({**summary, "steps": result.steps, "best_dev": result.best_metric,
                      "test": {k: report[k] for k in ("copy_source_baseline", "greedy", "beam4")},
                      "seconds": round(time.perf_counter() - started, 1)}, indent=1, ensure_ascii=False))
    return 0
