"""What every `python -m training.train TASK` run shares: reading the user's file with line-numbered
errors, a deterministic split (optionally by a group column, so near-duplicates of one group never
straddle train and test), split hashes for the manifest, and where the version goes.

A task module (training/byo/<task>.py) reads its format into examples, calls `split_examples`, trains
through training/loop.py, evaluates through the service's pipeline and publishes with
`service.model.manifest.write_manifest`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_ERRORS_SHOWN = 20
SPLIT_NAMES = ("train", "dev", "test")

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    line: int       # 1-based line (or record) number in the user's file; 0: the file as a whole
    message: str


class DataFileError(Exception):
    """The user's file cannot be trained on; every problem found, with its line number."""

    def __init__(self, path: pathlib.Path, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        shown = [f"  {path}:{p.line}: {p.message}" if p.line else f"  {path}: {p.message}"
                 for p in self.problems[:MAX_ERRORS_SHOWN]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"  ... and {more} more")
        super().__init__(f"{path}: {len(self.problems)} problem(s), nothing was trained:\n" + "\n".join(shown))


@dataclass(frozen=True)
class Split(Generic[T]):
    train: list[T]
    dev: list[T]
    test: list[T]

    def parts(self) -> dict[str, list[T]]:
        return {"train": self.train, "dev": self.dev, "test": self.test}


def _order(key: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_examples(examples: Sequence[T], key: Callable[[int, T], str], group: Callable[[T], str] | None = None,
                   fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: str = "seqserve") -> Split[T]:
    """Deterministic 80/10/10 by sha256 of each example's key (or of its group: every example of a group
    lands in the same part). Independent of the file's row order when keys do not depend on it."""
    units: dict[str, list[T]] = {}
    for index, example in enumerate(examples):
        unit = group(example) if group is not None else key(index, example)
        units.setdefault(unit, []).append(example)
    ordered = sorted(units, key=lambda u: _order(u, seed))
    total = sum(len(v) for v in units.values())
    train_end, dev_end = fractions[0] * total, (fractions[0] + fractions[1]) * total
    parts: dict[str, list[T]] = {name: [] for name in SPLIT_NAMES}
    seen = 0
    for unit in ordered:
        name = "train" if seen < train_end else "dev" if seen < dev_end else "test"
        parts[name].extend(units[unit])
        seen += len(units[unit])
    return Split(parts["train"], parts["dev"], parts["test"])


def split_hashes(split: Split[T], describe: Callable[[T], object]) -> dict[str, str]:
    """sha256 of each part's examples (as `describe` renders them): changes when membership or labels do."""
    return {f"{name}_sha256": hashlib.sha256(json.dumps([describe(e) for e in part], ensure_ascii=False,
                                                        sort_keys=True).encode()).hexdigest()
            for name, part in split.parts().items()}


def file_sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count_argument(flag: str) -> Callable[[str], int]:
    """An argparse type for a count where 0 means the default: a negative one is refused by the parser
    (`--max-epochs -1` trained no epoch and then failed loading a checkpoint never written)."""
    def count(text: str) -> int:
        value = int(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{flag}: {value} is negative (0 means the default)")
        return value
    return count


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=pathlib.Path, required=True, help="the training file")
    parser.add_argument("--name", required=True, help="the model name clients will ask for")
    parser.add_argument("--out", type=pathlib.Path, default=REPO_ROOT / "exported",
                        help="the model repository to publish into (default: exported/)")
    parser.add_argument("--version", default="", help="version folder (default: the next free number)")
    parser.add_argument("--max-epochs", type=count_argument("--max-epochs"), default=0, help="0: the task's default")
    parser.add_argument("--threads", type=count_argument("--threads"), default=0,
                        help="torch threads; 0: every available core")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="check the file and say what would be done")


def version_dir(out: pathlib.Path, name: str, version: str) -> pathlib.Path:
    """exported/<name>/<version>: the given version, else one above the newest there."""
    model_root = out / name
    # Checked at the plan, before any training: a file here made the publish step fail at the very end.
    for folder, what in ((out, f"--out {str(out)!r}"), (model_root, f"{str(model_root)!r} (--name's folder)")):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{what} is not a folder")
    if not version:
        numbers = [int(p.name) for p in model_root.iterdir() if p.name.isdigit()] if model_root.is_dir() else []
        version = str(max(numbers, default=0) + 1)
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"--version must be a number from 1, not {version!r}")
    return model_root / str(int(version))  # "007" is version 7, as the server reads it


def check_destination(out: pathlib.Path, name: str, target: pathlib.Path, task: str) -> None:
    """Refuse to overwrite a version, or to publish a model under the name of another task's model."""
    from service.model.manifest import read_manifest
    from service.model.version_policy import version_dirs

    if target.exists():
        raise ValueError(f"{target} already exists: choose another --version, or leave it out for the next one")
    existing = version_dirs(out / name) if (out / name).is_dir() else []
    if existing:
        found = read_manifest(existing[-1]).task
        if found != task:
            raise ValueError(f"--name {name!r} is a {found} model in {out}: choose another name")


def check_name(name: str) -> None:
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ValueError(f"--name {name!r}: use letters, digits, '-', '_' or '.' (it becomes a folder name)")
