"""ner: a tagger for your own entity types, from a CoNLL-style file (token and BIO tag per line).

    python -m training.train ner --data FILE --name NAME [--model {bilstm-crf,minilm}] [--split-by document]
                                 [--strict-bio] [--out DIR] [--version V] [--max-epochs N] [--dry-run]

The file: one token and its tag per line, separated by a tab or spaces; a blank line ends a sentence;
`-DOCSTART-` lines (CoNLL-2003) end a document. Tags are BIO (IOB2): O, B-<type>, I-<type>, for any
types. An I-x that does not continue an x entity (IOB1 files, hand edits) is repaired to B-x, which is
how the served tagger and seqeval read it anyway, and every repaired line is reported (--strict-bio
refuses such files instead). Everything else wrong is refused with its line number before training.

The service sees each sentence as its tokens joined with single spaces (training/data/ner.py), learns on
the served words with the token tags projected onto them, trains through training/train_ner.py's
recipes and the shared loop, publishes with training/export/ner.py and is scored through the served
pipeline against the majority-tag baseline (training/evaluate/ner.py). docs/your-own-models.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import re
import shutil
import time
from dataclasses import dataclass
from typing import Any

from seqeval.metrics.sequence_labeling import get_entities

from service.pipelines.ner_words import split_words
from training.byo.common import (
    DataFileError,
    Problem,
    Split,
    add_common_arguments,
    check_destination,
    check_name,
    file_sha256,
    split_examples,
    split_hashes,
    version_dir,
)
from training.configs import ner as cfg
from training.configs.checkpoints import checkpoint_dir
from training.data.ner import Tweet, tag_set

log = logging.getLogger("training.byo.ner")

MODELS = ("bilstm-crf", "minilm")
DOCSTART = "-DOCSTART-"
TAG_PATTERN = re.compile(r"^([BI])-(\S+)$")
OTHER_SCHEMES = re.compile(r"^([ESLU])-\S+$")  # BIOES / BILOU prefixes
# 80/10/10 leaves dev and test 2 sentences each at 20; fewer cannot be split into three useful parts.
MIN_SENTENCES = 20
MAX_SHOWN_LINES = 10


@dataclass
class ConllFile:
    """The sentences of a user's file, with where each came from."""

    sentences: list[Tweet]
    first_lines: list[int]  # 1-based line of each sentence's first token
    documents: list[int]  # document number of each sentence (`-DOCSTART-` lines start one)
    repaired_lines: list[int]  # I-x tags rewritten to B-x
    sha256: str


def parse_tag(tag: str) -> tuple[str, str] | str:
    """(prefix, type) of an O/B-x/I-x tag, or what is wrong with it."""
    if tag == "O":
        return "O", ""
    match = TAG_PATTERN.match(tag)
    if match:
        return match.group(1), match.group(2)
    if OTHER_SCHEMES.match(tag):
        return (f"tag {tag!r} is BIOES/BILOU; this trainer reads BIO (IOB2): write S-x as B-x, and E-x/L-x "
                "as I-x")
    return f"tag {tag!r} is not O, B-<type> or I-<type> (BIO tagging)"


def read_conll(path: pathlib.Path, strict_bio: bool = False) -> ConllFile:
    """Every sentence of the file, or DataFileError listing every problem with its line number."""
    if not path.is_file():
        raise DataFileError(path, [Problem(0, "no such file")])
    raw = path.read_bytes()
    problems: list[Problem] = []
    sentences: list[Tweet] = []
    first_lines: list[int] = []
    documents: list[int] = []
    repaired: list[int] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    document = 0

    def close_sentence() -> None:
        if tokens:
            sentences.append(Tweet(len(sentences), tuple(tokens), tuple(tags)))
            first_lines.append(lines[0])
            documents.append(document)
            tokens.clear()
            tags.clear()
            lines.clear()

    for number, raw_line in enumerate(raw.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(number, f"not UTF-8 text (byte {exc.start} of the line)"))
            continue
        fields = line.split()
        if not fields:
            close_sentence()
            continue
        if fields[0] == DOCSTART:
            close_sentence()
            document += 1
            continue
        if len(fields) != 2:
            problems.append(Problem(number, f"expected 2 columns (token and tag, separated by a tab or spaces), "
                                            f"found {len(fields)}: {line.strip()[:60]!r}"))
            continue
        token, tag = fields
        parsed = parse_tag(tag)
        if isinstance(parsed, str):
            problems.append(Problem(number, parsed))
            continue
        prefix, kind = parsed
        if prefix == "I" and (not tags or tags[-1] not in (f"B-{kind}", f"I-{kind}")):
            after = f"after {tags[-1]}" if tags else "at the start of a sentence"
            if strict_bio:
                problems.append(Problem(number, f"{tag} {after}: an entity starts with B-{kind} in BIO (IOB2)"))
                continue
            tag = f"B-{kind}"
            repaired.append(number)
        tokens.append(token)
        tags.append(tag)
        lines.append(number)
    close_sentence()
    problems += _file_problems(sentences, first_lines, bool(raw.strip()))
    if problems:
        raise DataFileError(path, problems)
    return ConllFile(sentences, first_lines, documents, repaired, file_sha256(path))


def _file_problems(sentences: list[Tweet], first_lines: list[int], has_text: bool) -> list[Problem]:
    if not has_text:
        return [Problem(0, "the file is empty")]
    problems = []
    for sentence, line in zip(sentences, first_lines, strict=True):
        words = len(split_words(sentence.text))
        if words > cfg.MAX_WORDS:
            # Usually a missing blank line between sentences; the served tagger would leave the rest untagged.
            problems.append(Problem(line, f"a sentence of {words} words starts here; the tagger reads at most "
                                          f"{cfg.MAX_WORDS}: end each sentence with a blank line"))
    if sentences and not any(tag != "O" for s in sentences for tag in s.tags):
        problems.append(Problem(0, "no entity: every tag is O; tag at least one entity with B-<type>"))
    if len(sentences) < MIN_SENTENCES:
        problems.append(Problem(0, f"{len(sentences)} sentence(s); at least {MIN_SENTENCES} are needed to hold "
                                   "out dev and test sentences (80/10/10)"))
    return problems


def entity_types(sentences: list[Tweet]) -> collections.Counter[str]:
    return collections.Counter(kind for s in sentences for kind, _, _ in get_entities(list(s.tags)))


def split_file(data: ConllFile, path: pathlib.Path, by_document: bool) -> Split[Tweet]:
    """80/10/10 by sha256 of each sentence (or of its document), then the checks only a split can fail."""
    document_of = {s.index: d for s, d in zip(data.sentences, data.documents, strict=True)}
    if by_document and len(set(data.documents)) < 3:
        raise DataFileError(path, [Problem(0, f"--split-by document needs at least 3 documents ({DOCSTART} "
                                              f"lines start them), found {len(set(data.documents))}")])
    split = split_examples(data.sentences, key=lambda _, s: f"{s.index}:{s.text}",
                           group=(lambda s: str(document_of[s.index])) if by_document else None)
    line_of = {s.index: line for s, line in zip(data.sentences, data.first_lines, strict=True)}
    problems = []
    for name in ("dev", "test"):
        if not entity_types(split.parts()[name]):
            problems.append(Problem(0, f"the held-out {name} part ({len(split.parts()[name])} sentences) has no "
                                       "entity to score; add sentences with entities"))
    trained = entity_types(split.train)
    for kind in sorted(set(entity_types(data.sentences)) - set(trained)):
        lines = [line_of[s.index] for s in data.sentences if kind in entity_types([s])]
        shown = ", ".join(map(str, lines[:MAX_SHOWN_LINES])) + (" ..." if len(lines) > MAX_SHOWN_LINES else "")
        problems.append(Problem(lines[0], f"entity type {kind!r} occurs only in sentences held out for dev/test "
                                          f"(lines {shown}): add sentences with it so training sees it"))
    if problems:
        raise DataFileError(path, problems)
    return split


def bilstm_size(train_tokens: int) -> dict[str, Any]:
    """The BiLSTM from the data: hidden size ~ sqrt(training tokens), between 32 and the committed 200
    (WNUT's 37k training tokens give 192), word embeddings half of it; the rest as committed."""
    hidden = int(min(200, max(32, round(math.sqrt(train_tokens) / 8) * 8)))
    return {**cfg.BILSTM, "hidden_dim": hidden, "word_dim": min(100, max(32, hidden // 2))}


def batch_size_for(model: str, train_sentences: int) -> int:
    """The committed batch size, smaller for a small file so an epoch still takes about 8 steps."""
    committed = cfg.BILSTM_BATCH_SIZE if model == "bilstm-crf" else cfg.MINILM_BATCH_SIZE
    return max(2, min(committed, train_sentences // 8))


def available_threads() -> int:
    from service.runtime.threads import affinity_cpus, cgroup_cpu_quota

    quota = cgroup_cpu_quota()
    return max(1, min(affinity_cpus(), math.floor(quota))) if quota is not None else affinity_cpus()


@dataclass(frozen=True)
class Plan:
    model: str
    model_config: dict[str, Any]
    batch_size: int
    loop: Any  # LoopConfig
    version_dir: pathlib.Path


def make_plan(args: argparse.Namespace, split: Split[Tweet], data: ConllFile) -> Plan:
    from training.loop import LoopConfig  # torch: imported once the file is known to be good

    base: LoopConfig = cfg.BILSTM_LOOP if args.model == "bilstm-crf" else cfg.MINILM_LOOP
    train_tokens = sum(len(s.tokens) for s in split.train)
    model_config = bilstm_size(train_tokens) if args.model == "bilstm-crf" else dict(cfg.MINILM)
    batch_size = batch_size_for(args.model, len(split.train))
    steps_per_epoch = math.ceil(len(split.train) / batch_size)
    loop = dataclasses.replace(
        base, max_epochs=args.max_epochs or base.max_epochs, seed=args.seed,
        threads=args.threads or available_threads(), max_steps=args.max_steps,
        warmup_steps=min(base.warmup_steps, steps_per_epoch),  # a small file's first epoch already warms up
    )
    # The same file and settings resume the same run (also with more epochs, steps or threads); anything
    # else trains afresh in a folder of its own.
    settings = dataclasses.asdict(dataclasses.replace(loop, max_epochs=0, max_steps=0, threads=0))
    fingerprint = hashlib.sha256(json.dumps(
        [data.sha256, args.model, model_config, batch_size, settings, args.split_by, args.strict_bio],
        sort_keys=True).encode()).hexdigest()[:16]
    loop = dataclasses.replace(loop, checkpoint_dir=checkpoint_dir(f"train-ner/{args.name}-{fingerprint}"))
    return Plan(args.model, model_config, batch_size, loop, version_dir(args.out, args.name, args.version))




def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", choices=MODELS, default="bilstm-crf",
                        help="bilstm-crf (default): small, from scratch; minilm: fine-tune the packaged MiniLM")
    parser.add_argument("--split-by", choices=("sentence", "document"), default="sentence",
                        help="document: sentences of one -DOCSTART- document stay in one part (no leakage)")
    parser.add_argument("--strict-bio", action="store_true",
                        help="refuse an I-x that does not continue an x entity instead of repairing it to B-x")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")


def describe(sentence: Tweet) -> object:
    return [sentence.tokens, sentence.tags]


def run(args: argparse.Namespace) -> int:
    check_name(args.name)
    data = read_conll(args.data, strict_bio=args.strict_bio)
    split = split_file(data, args.data, by_document=args.split_by == "document")
    types = entity_types(data.sentences)
    tags = tag_set(types)
    if data.repaired_lines:
        log.warning("%s: %d I-x tag(s) that began an entity were read as B-x (lines %s%s)", args.data,
                    len(data.repaired_lines), ", ".join(map(str, data.repaired_lines[:MAX_SHOWN_LINES])),
                    " ..." if len(data.repaired_lines) > MAX_SHOWN_LINES else "")
    plan = make_plan(args, split, data)
    check_destination(args.out, args.name, plan.version_dir, "ner")
    parts = split.parts()
    data_info: dict[str, Any] = {
        "file": args.data.name, "data_sha256": data.sha256, "split_by": args.split_by,
        "sentences": len(data.sentences), "tokens": sum(len(s.tokens) for s in data.sentences),
        "entities": dict(sorted(types.items())), "bio_repaired_lines": data.repaired_lines,
        **split_hashes(split, describe), **{f"{k}_size": len(v) for k, v in parts.items()},
    }
    summary = {"version_dir": str(plan.version_dir), "model": plan.model, "labels": list(tags), **data_info,
               "model_config": plan.model_config, "batch_size": plan.batch_size,
               "max_epochs": plan.loop.max_epochs, "threads": plan.loop.threads,
               "checkpoint_dir": plan.loop.checkpoint_dir}
    if args.dry_run:
        print(json.dumps({"dry_run": True, **summary}, indent=1, ensure_ascii=False))
        return 0
    return train_and_publish(args, plan, parts, tags, data_info)


def train_and_publish(args: argparse.Namespace, plan: Plan, parts: dict[str, list[Tweet]], tags: tuple[str, ...],
                      data_info: dict[str, Any]) -> int:
    from training.loop import distributed_context
    from training.train_ner import run_training

    started = time.perf_counter()
    recipe, result = run_training(plan.model, parts, plan.loop, plan.batch_size, tags=tags,
                                  model_config=plan.model_config)
    if distributed_context()[0] != 0:
        return 0  # under torchrun only rank 0 exports
    from training.export.ner import publish

    # Built beside the model's versions in a folder the server ignores (not a number), then renamed into
    # place: a polling server never sees a half-written version.
    target = plan.version_dir
    staging = target.parent / f".staging-{target.name}-{os.getpid()}"
    try:
        report = publish(plan.model, recipe, result, parts, data_info, plan.loop, plan.batch_size, staging,
                         target.name, name=args.name, tags=tags, source=f"user file {args.data.name}")
        check_destination(args.out, args.name, target, "ner")
        pathlib.Path(report["version_dir"]).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report["version_dir"] = str(target)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0
