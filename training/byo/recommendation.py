"""recommendation: a next-item recommender for your own catalogue, from a CSV of interactions.

    python -m training.train recommendation --data FILE --name NAME [--items FILE] [--model sasrec]
        [--user-column C] [--item-column C] [--time-column C] [--cooccurrence-weight W] [--max-steps N]
        [--out DIR] [--version V] [--max-epochs N] [--dry-run]

The file: CSV with a header naming `user,item,timestamp` (other names through --*-column; other columns
are ignored); ids are any strings (kept exactly, surrounding spaces removed), the timestamp any number
that orders a user's interactions (seconds, milliseconds, a counter). `--items`: CSV whose header is
followed by rows `item,title[,genre...]` (a genre cell may hold several, separated by '|'); a title
ending in " (YYYY)" gives the item its year. Every problem is reported with its line before training.

Each user's interactions are ordered by time (ties: file order); users with fewer than 3 are dropped
(counted), the rest split leave-one-out as the committed model (training/data/movielens.py: last item
test, second last dev). SASRec trains through training/train_recommendation.py and the shared loop,
sized from the data; the EASE co-occurrence term is fitted on the same training interactions when the
catalogue is small enough to do so in bounded memory; the version is scored through the served pipeline
against the popularity baseline and served through `Recommend`, by the user's ids (HistoryItem.key) or
titles. docs/your-own-models.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import pathlib
import re
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from training.byo.common import (
    DataFileError,
    Problem,
    add_common_arguments,
    check_destination,
    check_name,
    version_dir,
)
from training.configs import recommendation as cfg
from training.configs.checkpoints import checkpoint_dir
from training.data.movielens import Item, MovieLens, Splits, split_data

log = logging.getLogger("training.byo.recommendation")

MODELS = ("sasrec",)
MIN_INTERACTIONS = 3  # one to train on, one for dev, one for test
# Leave-one-out gives one dev and one test case per user: fewer users than this score nothing useful.
MIN_USERS = 10
MIN_ITEMS = 10  # fewer items leave nothing to rank
MAX_K = 100
# The co-occurrence term builds a dense users x items matrix and an items x items gram matrix and
# eigendecomposes it (training/models/cooccurrence.py): past these sizes it is skipped, saying why.
MAX_COOCCURRENCE_ITEMS = 8000
MAX_COOCCURRENCE_CELLS = 100_000_000  # users x items (800 MB as float64)
YEAR_IN_TITLE = re.compile(r"^(.*\S)\s*\((\d{4})\)$")


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    time: float
    line: int


@dataclass(frozen=True)
class CatalogueEntry:
    title: str
    genres: tuple[str, ...]


def _text(path: pathlib.Path) -> str:
    if not path.is_file():
        raise DataFileError(path, [Problem(0, "no such file")])
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFileError(path, [Problem(line, f"not UTF-8 text (byte {exc.start} of the file)")]) from None


def _rows(path: pathlib.Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line, fields)]) of a CSV file, blank lines skipped; line = the record's first line."""
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    line = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                if header is None:
                    header = [f.strip() for f in fields]
                else:
                    rows.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DataFileError(path, [Problem(reader.line_num, f"not readable as CSV: {exc}")]) from None
    if header is None:
        raise DataFileError(path, [Problem(0, "the file is empty")])
    return header, rows


def read_interactions(path: pathlib.Path, user_column: str, item_column: str,
                      time_column: str) -> list[Interaction]:
    """Every interaction of the file, or DataFileError listing every problem with its line."""
    header, rows = _rows(path)
    wanted = {"--user-column": user_column, "--item-column": item_column, "--time-column": time_column}
    missing = [f"{name!r} (set it with {flag})" for flag, name in wanted.items() if name not in header]
    if missing:
        raise DataFileError(path, [Problem(1, f"the header {','.join(header)!r} lacks the column(s) "
                                              f"{', '.join(missing)}")])
    user_at, item_at, time_at = (header.index(name) for name in wanted.values())
    problems: list[Problem] = []
    interactions: list[Interaction] = []
    for line, fields in rows:
        if len(fields) != len(header):
            problems.append(Problem(line, f"expected {len(header)} fields as in the header, found {len(fields)}"))
            continue
        user, item, stamp = fields[user_at].strip(), fields[item_at].strip(), fields[time_at].strip()
        row_problems = [f"empty {name} id" for name, value in (("user", user), ("item", item)) if not value]
        try:
            moment = float(stamp)
            if not math.isfinite(moment):
                raise ValueError(stamp)
        except ValueError:
            row_problems.append(f"timestamp {stamp[:40]!r} is not a number (any number that orders a user's "
                                "interactions: seconds, milliseconds, a counter)")
        problems += [Problem(line, message) for message in row_problems]
        if not row_problems:
            interactions.append(Interaction(user, item, moment, line))
    if problems:
        raise DataFileError(path, problems)
    if not interactions:
        raise DataFileError(path, [Problem(0, "no interactions: the file has a header only")])
    return interactions


def read_items(path: pathlib.Path) -> dict[str, CatalogueEntry]:
    """item -> title and genres from `item,title[,genre...]` rows after a header line."""
    _, rows = _rows(path)
    problems: list[Problem] = []
    entries: dict[str, CatalogueEntry] = {}
    first_line: dict[str, int] = {}
    for line, fields in rows:
        item = fields[0].strip()
        title = fields[1].strip() if len(fields) > 1 else ""
        if not item or not title:
            problems.append(Problem(line, "expected item,title[,genre...]: " +
                                    ("empty item id" if not item else "no title")))
            continue
        if item in entries:
            problems.append(Problem(line, f"item {item[:40]!r} again (first on line {first_line[item]})"))
            continue
        genres = tuple(g.strip() for cell in fields[2:] for g in cell.split("|") if g.strip())
        entries[item] = CatalogueEntry(title, genres)
        first_line[item] = line
    if problems:
        raise DataFileError(path, problems)
    return entries


def catalogue_item(dense_id: int, key: str, entry: CatalogueEntry | None) -> Item:
    """The served description of one item: its title (the key when the items file has none), and the
    year a title like "Heat (1995)" carries."""
    name = entry.title if entry else key
    match = YEAR_IN_TITLE.match(name)
    title, year = (match.group(1), int(match.group(2))) if match else (name, 0)
    return Item(dense_id, key, title, year, entry.genres if entry else (), full_name=name)


@dataclass(frozen=True)
class Dataset:
    data: MovieLens
    splits: Splits
    info: dict[str, str]


def build_dataset(args: argparse.Namespace) -> Dataset:
    """The file's users (3+ interactions) as time-ordered item sequences over dense ids, split leave-one-out."""
    interactions = read_interactions(args.data, args.user_column, args.item_column, args.time_column)
    entries = read_items(args.items) if args.items else {}
    per_user: dict[str, list[Interaction]] = defaultdict(list)
    for interaction in interactions:
        per_user[interaction.user].append(interaction)
    kept = {user: rows for user, rows in per_user.items() if len(rows) >= MIN_INTERACTIONS}
    dropped = len(per_user) - len(kept)
    if dropped:
        log.warning("%s: %d of %d users have fewer than %d interactions and were dropped", args.data, dropped,
                    len(per_user), MIN_INTERACTIONS)
    keys = sorted({row.item for rows in kept.values() for row in rows})
    problems = []
    if len(kept) < MIN_USERS:
        problems.append(Problem(0, f"{len(kept)} user(s) with at least {MIN_INTERACTIONS} interactions "
                                   f"({dropped} with fewer dropped); at least {MIN_USERS} are needed to hold out "
                                   "a dev and a test item per user"))
    if len(keys) < MIN_ITEMS:
        problems.append(Problem(0, f"{len(keys)} distinct item(s) among the kept users; at least {MIN_ITEMS} "
                                   "are needed to rank"))
    if problems:
        raise DataFileError(args.data, problems)
    id_of = {key: index + 1 for index, key in enumerate(keys)}
    items = [catalogue_item(id_of[key], key, entries.get(key)) for key in keys]
    # (time, line): a stable sort by time, ties in file order, as for MovieLens.
    histories = {user: [id_of[r.item] for r in sorted(kept[user], key=lambda r: (r.time, r.line))]
                 for user in sorted(kept)}
    digest = hashlib.sha256(args.data.read_bytes())
    if args.items:
        digest.update(args.items.read_bytes())
    data = MovieLens(items, histories, digest.hexdigest(), keyed=True)
    data, splits, info = split_data(data, args.data.name)
    untitled = sum(1 for key in keys if key not in entries)
    info.update({
        "source": f"user file {args.data.name}" + (f" with items file {args.items.name}" if args.items else ""),
        "columns": f"user={args.user_column}, item={args.item_column}, timestamp={args.time_column}",
        "users_dropped_below_3_interactions": str(dropped),
        "items_without_title": str(untitled) if args.items else "all (no --items file)",
        "items_file_entries_never_interacted": str(len(set(entries) - set(keys))),
    })
    return Dataset(data, splits, info)


def model_size(splits: Splits, num_items: int) -> dict[str, Any]:
    """SASRec from the data: max_length covers 90% of the training sequences (10..200, the committed
    200 for ML-1M-like histories), d ~ sqrt(training interactions) / 4 as a power of two in 16..256
    (ML-1M's ~1M give the committed 256); the rest as committed (2 blocks, 1 head, dropout 0.2)."""
    lengths = sorted(len(s) for s in splits.train.values())
    p90 = lengths[min(len(lengths) - 1, int(0.9 * len(lengths)))]
    max_length = int(min(200, max(10, math.ceil(p90 / 10) * 10)))
    interactions = sum(lengths)
    hidden = int(min(256, max(16, 2 ** round(math.log2(max(1.0, math.sqrt(interactions) / 4))))))
    return {**cfg.MODEL, "max_length": max_length, "hidden_dim": hidden}


def cooccurrence_setting(data: MovieLens, splits: Splits, weight: float) -> tuple[Any, str]:
    """(CooccurrenceConfig or None, why). l2 scales with the mean item count: the committed 1000 was chosen
    on ML-1M dev, whose items have ~270 training interactions each."""
    from training.models.cooccurrence import CooccurrenceConfig

    if weight <= 0:
        return None, "off (--cooccurrence-weight 0)"
    cells = len(splits.train) * data.num_items
    if data.num_items > MAX_COOCCURRENCE_ITEMS or cells > MAX_COOCCURRENCE_CELLS:
        return None, (f"skipped: {data.num_items} items x {len(splits.train)} users is past the bounds "
                      f"({MAX_COOCCURRENCE_ITEMS} items, {MAX_COOCCURRENCE_CELLS:,} cells) of the dense EASE fit")
    mean_count = sum(len(s) for s in splits.train.values()) / data.num_items
    l2 = round(min(1000.0, max(1.0, mean_count * 1000.0 / 270.0)), 1)
    config = CooccurrenceConfig(l2=l2, rank=min(256, data.num_items), weight=weight)
    return config, (f"l2 = {l2:g} (1000 x the mean training interactions per item / 270, ML-1M's; in 1..1000), "
                    f"rank {config.rank}, weight {weight:g} (--cooccurrence-weight); not tuned on this data's dev")


def available_threads() -> int:
    from service.runtime.threads import affinity_cpus, cgroup_cpu_quota

    quota = cgroup_cpu_quota()
    return max(1, min(affinity_cpus(), math.floor(quota))) if quota is not None else affinity_cpus()


@dataclass(frozen=True)
class Plan:
    model_config: dict[str, Any]
    batch_size: int
    loop: Any  # LoopConfig
    final_phase: bool
    cooccurrence: Any  # CooccurrenceConfig | None
    cooccurrence_note: str
    version_dir: pathlib.Path


def training_windows_count(splits: Splits, max_length: int) -> int:
    return sum(max(1, math.ceil((len(s) - 1) / max_length)) for s in splits.train.values() if len(s) >= 2)


def make_plan(args: argparse.Namespace, dataset: Dataset) -> Plan:
    from training.loop import LoopConfig  # torch: imported once the file is known to be good

    model_config = model_size(dataset.splits, dataset.data.num_items)
    windows = training_windows_count(dataset.splits, model_config["max_length"])
    # The committed 32 windows a step, fewer for a small file so an epoch still takes about 8 steps.
    batch_size = max(2, min(cfg.BATCH_SIZE, windows // 8))
    steps_per_epoch = math.ceil(windows / batch_size)
    base: LoopConfig = cfg.LOOP
    loop = dataclasses.replace(
        base, max_epochs=args.max_epochs or base.max_epochs, seed=args.seed,
        threads=args.threads or available_threads(), max_steps=args.max_steps,
        warmup_steps=min(base.warmup_steps, steps_per_epoch))
    cooccurrence, note = cooccurrence_setting(dataset.data, dataset.splits, args.cooccurrence_weight)
    # The same data and settings resume the same run; anything else trains afresh in a folder of its own.
    settings = dataclasses.asdict(dataclasses.replace(loop, max_epochs=0, max_steps=0, threads=0))
    fingerprint = hashlib.sha256(json.dumps([dataset.data.data_sha256, args.user_column, args.item_column,
                                             args.time_column, model_config, batch_size, settings],
                                            sort_keys=True).encode()).hexdigest()[:16]
    loop = dataclasses.replace(loop, checkpoint_dir=checkpoint_dir(f"train-recommendation/{args.name}-{fingerprint}"))
    return Plan(model_config, batch_size, loop, not args.no_final_phase, cooccurrence, note,
                version_dir(args.out, args.name, args.version))




def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", choices=MODELS, default="sasrec",
                        help="sasrec (default): self-attention over the history, plus item co-occurrence (EASE)")
    parser.add_argument("--items", type=pathlib.Path, default=None,
                        help="CSV with a header, then item,title[,genre...] rows: titles and genres to serve")
    parser.add_argument("--user-column", default="user")
    parser.add_argument("--item-column", default="item")
    parser.add_argument("--time-column", default="timestamp")
    parser.add_argument("--cooccurrence-weight", type=float, default=float(cfg.COOCCURRENCE["weight"])
                        if cfg.COOCCURRENCE else 0.0,
                        help="weight of the EASE term beside SASRec's scores (0: SASRec alone)")
    parser.add_argument("--no-final-phase", action="store_true",
                        help="one phase only (the committed recipe adds a phase with the rate decaying to 0)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop each phase after this many steps (0: no limit)")


def summary(dataset: Dataset, plan: Plan) -> dict[str, Any]:
    lengths = Counter(len(h) for h in dataset.data.histories.values())
    return {"version_dir": str(plan.version_dir), "model": "sasrec", **dataset.info,
            "longest_history": max(lengths), "model_config": plan.model_config, "batch_size": plan.batch_size,
            "max_epochs": plan.loop.max_epochs, "final_phase": cfg.FINAL_PHASE if plan.final_phase else None,
            "threads": plan.loop.threads, "cooccurrence": plan.cooccurrence_note,
            "checkpoint_dir": plan.loop.checkpoint_dir}


def run(args: argparse.Namespace) -> int:
    check_name(args.name)
    dataset = build_dataset(args)
    plan = make_plan(args, dataset)
    check_destination(args.out, args.name, plan.version_dir, "recommendation")
    if args.dry_run:
        print(json.dumps({"dry_run": True, **summary(dataset, plan)}, indent=1, ensure_ascii=False))
        return 0
    return train_and_publish(args, plan, dataset)


def train_and_publish(args: argparse.Namespace, plan: Plan, dataset: Dataset) -> int:
    from training.loop import LoopConfig, distributed_context
    from training.train_recommendation import Trained, export_version, final_phase_config, train_sasrec

    started = time.perf_counter()
    split = (dataset.data, dataset.splits, dataset.info)
    def run_phase(loop: LoopConfig, init_from: pathlib.Path | None = None) -> Trained:
        return train_sasrec(split, plan.model_config, loop, all_windows=cfg.ALL_WINDOWS, batch_size=plan.batch_size,
                            loss=cfg.LOSS, negatives=cfg.NEGATIVES, init_from=init_from)

    trained = run_phase(plan.loop)
    if plan.final_phase:
        final = run_phase(final_phase_config(plan.loop, cfg.FINAL_PHASE),
                          init_from=pathlib.Path(plan.loop.checkpoint_dir) / "best.pt")
        # Kept only when dev says it helps: on ML-1M it did (+0.008 full NDCG@10), on ML-100K as a user's
        # file it did not (0.1116 after phase 1, 0.1073 at the final phase's best; docs/your-own-models.md).
        if final.result.best_metric > trained.result.best_metric:
            trained = final
        else:
            log.info("the final phase's best dev %s %.4f is not above the first phase's %.4f: the first is kept",
                     plan.loop.metric, final.result.best_metric, trained.result.best_metric)
    if distributed_context()[0] != 0:
        return 0  # under torchrun only rank 0 exports
    config = trained.model.config
    description = (f"SASRec (causal self-attention over the item history, d = {config.hidden_dim}, up to "
                   f"{config.max_length} items) trained on {dataset.info['source']} ({dataset.data.num_items} items, "
                   f"{len(dataset.data.histories)} users), leave-one-out.")
    # Built beside the model's versions in a folder the server ignores (not a number), then renamed into
    # place: a polling server never sees a half-written version.
    target = plan.version_dir
    staging = target.parent / f".staging-{os.getpid()}"
    try:
        manifest = export_version(trained, staging / target.name, args.name,
                                  max_k=min(MAX_K, dataset.data.num_items), description=description,
                                  cooccurrence=plan.cooccurrence, default_for_task=False,
                                  cooccurrence_chosen_by=plan.cooccurrence_note)
        check_destination(args.out, args.name, target, "recommendation")
        (staging / target.name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = {"version_dir": str(target), "parity": manifest["parity"], "metrics": manifest["metrics"],
              "dev_metrics": manifest.get("dev_metrics"), "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0
