"""MovieLens sequences: stable item ids, time order with deterministic ties, leave-one-out splits, hashes."""

from __future__ import annotations

import pathlib

import pytest

from training.data.movielens import Case, leave_one_out, load, load_files, load_splits, split_hashes

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_HEADER = "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"


def write_dataset(directory: pathlib.Path, interactions: list[tuple[str, str, int]]) -> pathlib.Path:
    stem = directory / "tiny"
    stem.with_suffix(".inter").write_text(
        INTER_HEADER + "".join(f"{u}\t{i}\t4\t{t}\r\n" for u, i, t in interactions), "utf-8")
    stem.with_suffix(".item").write_text(
        ITEM_HEADER + "Zoo (1999)\tZoo\t1999\tComedy Drama\r\nAlpha (1990)\tAlpha\t1990\tSci-Fi\r\n"
        "Mid (1995)\tMid\t1995\tFilm-Noir\r\nNever Rated (2000)\tNever Rated\t2000\tDrama\r\n", "utf-8")
    return stem


def test_item_ids_are_the_rated_keys_sorted_with_metadata_kept(tmp_path: pathlib.Path) -> None:
    data = load_files(write_dataset(tmp_path, [("u1", "Zoo (1999)", 5), ("u1", "Alpha (1990)", 6),
                                               ("u2", "Mid (1995)", 1)]))
    assert [(i.id, i.key, i.title, i.year, i.genres) for i in data.items] == [
        (1, "Alpha (1990)", "Alpha", 1990, ("Sci-Fi",)),
        (2, "Mid (1995)", "Mid", 1995, ("Film-Noir",)),
        (3, "Zoo (1999)", "Zoo", 1999, ("Comedy", "Drama")),
    ]  # "Never Rated" has no interactions, so no id


def test_histories_follow_time_and_ties_keep_file_order(tmp_path: pathlib.Path) -> None:
    # u1 rated Zoo and Alpha in the same second: file order (Zoo first) wins, not the alphabet.
    data = load_files(write_dataset(tmp_path, [("u1", "Mid (1995)", 9), ("u1", "Zoo (1999)", 5),
                                               ("u1", "Alpha (1990)", 5), ("u2", "Alpha (1990)", 3)]))
    assert data.histories == {"u1": [3, 1, 2], "u2": [1]}


def test_leave_one_out_holds_out_the_last_two_items() -> None:
    splits = leave_one_out({"a": [5, 6, 7, 8], "b": [1, 2], "c": [3, 4, 9]})
    assert splits.train == {"a": [5, 6], "b": [1, 2], "c": [3]}
    assert splits.dev == [Case("a", (5, 6), 7), Case("c", (3,), 4)]
    assert splits.test == [Case("a", (5, 6, 7), 8), Case("c", (3, 4), 9)]


def test_split_hashes_change_with_order_within_a_history() -> None:
    one = split_hashes(leave_one_out({"a": [1, 2, 3, 4]}))
    assert one == split_hashes(leave_one_out({"a": [1, 2, 3, 4]}))
    assert one["train"] != split_hashes(leave_one_out({"a": [2, 1, 3, 4]}))["train"]


@pytest.fixture(scope="module")
def ml100k():
    return load_splits("ml-100k")


def test_ml100k_loads_every_rating_in_time_order(ml100k) -> None:
    data, splits, info = ml100k
    assert (info["users"], info["items"], info["interactions"]) == ("943", "1682", "100000")
    assert [i.id for i in data.items] == list(range(1, 1683))
    assert len(splits.test) == len(splits.dev) == 943
    assert sum(len(s) for s in splits.train.values()) == 100000 - 2 * 943
    # the test history is the dev history plus the dev target
    for dev, test in zip(splits.dev, splits.test, strict=True):
        assert test.history == (*dev.history, dev.target)


def test_ml100k_sequences_are_sorted_by_timestamp(ml100k) -> None:
    data, _, _ = ml100k
    from training.data.movielens import DATASETS, package_dir

    package, stem = DATASETS["ml-100k"]
    lines = (package_dir(package) / stem).with_suffix(".inter").read_text("utf-8").splitlines()[1:]
    when = {(u, i): float(t) for u, i, _, t in (line.split("\t") for line in lines)}
    key_of = {item.id: item.key for item in data.items}
    for user, history in data.histories.items():
        times = [when[(user, key_of[item])] for item in history]
        assert times == sorted(times), user


def test_loading_twice_gives_the_same_split_hashes(ml100k) -> None:
    _, _, info = ml100k
    _, _, again = load_splits("ml-100k")
    assert info == again


@pytest.mark.slow  # reads all 1M MovieLens ratings
def test_ml1m_item_ids_are_titles_resolved_to_a_sorted_integer_map() -> None:
    data = load("ml-1m")
    assert data.num_items == 3706 and len(data.histories) == 6040
    keys = [item.key for item in data.items]
    assert keys == sorted(keys)
    toy_story = next(item for item in data.items if item.key == "Toy Story (1995)")
    assert (toy_story.title, toy_story.year, toy_story.genres) == ("Toy Story", 1995,
                                                                   ("Animation", "Children's", "Comedy"))

