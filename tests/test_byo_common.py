"""The parts every `python -m training.train TASK` run shares: the split and the file errors."""

from __future__ import annotations

import pathlib

import pytest

from training.byo.common import DataFileError, Problem, split_examples, split_hashes, version_dir
from training.train import main


def test_the_split_is_deterministic_and_ignores_row_order() -> None:
    rows = [f"text {i}" for i in range(1000)]
    first = split_examples(rows, key=lambda _, r: r)
    again = split_examples(list(reversed(rows)), key=lambda _, r: r)
    assert {k: sorted(v) for k, v in first.parts().items()} == {k: sorted(v) for k, v in again.parts().items()}
    assert (len(first.train), len(first.dev), len(first.test)) == pytest.approx((800, 100, 100), abs=15)
    assert split_hashes(first, str) == split_hashes(split_examples(rows, key=lambda _, r: r), str)


def test_a_group_never_straddles_two_parts() -> None:
    rows = [(f"doc{i // 7}", f"sentence {i}") for i in range(700)]
    split = split_examples(rows, key=lambda _, r: r[1], group=lambda r: r[0])
    owners = {doc: name for name, part in split.parts().items() for doc, _ in part}
    for name, part in split.parts().items():
        assert all(owners[doc] == name for doc, _ in part)


def test_file_errors_name_every_line_and_cap_the_list(tmp_path: pathlib.Path) -> None:
    error = DataFileError(tmp_path / "data.csv", [Problem(i, "empty text") for i in range(2, 40)])
    text = str(error)
    assert f"{tmp_path / 'data.csv'}:2: empty text" in text and "38 problem(s)" in text and "... and 18 more" in text


def test_the_next_version_is_one_above_the_newest(tmp_path: pathlib.Path) -> None:
    assert version_dir(tmp_path, "topics", "") == tmp_path / "topics" / "1"
    (tmp_path / "topics" / "3").mkdir(parents=True)
    assert version_dir(tmp_path, "topics", "") == tmp_path / "topics" / "4"
    with pytest.raises(ValueError, match="must be a number"):
        version_dir(tmp_path, "topics", "latest")


def test_the_command_needs_a_task() -> None:
    with pytest.raises(SystemExit):
        main([])
