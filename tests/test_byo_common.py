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


def _topics_csv(tmp_path: pathlib.Path) -> pathlib.Path:
    data = tmp_path / "topics.csv"
    data.write_text("text,label\n" + "".join(f"word{i} goal,sport\nword{i} rain,weather\n" for i in range(20)), "utf-8")
    return data


def test_an_out_that_is_a_file_is_refused_before_training(tmp_path: pathlib.Path) -> None:
    # Session 8 outside-in pass: `--out` naming a file trained the whole model, then failed publishing
    # with a NotADirectoryError traceback (exit 1). It is refused at the plan, naming --out.
    not_a_folder = tmp_path / "afile"
    not_a_folder.write_text("", "utf-8")
    with pytest.raises(ValueError, match=r"--out .*afile.* is not a folder"):
        version_dir(not_a_folder, "topics", "")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "topics").write_text("", "utf-8")
    with pytest.raises(ValueError, match=r"topics.* is not a folder"):
        version_dir(tmp_path / "repo", "topics", "")


def test_an_out_that_is_a_file_fails_the_dry_run(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_folder = tmp_path / "afile"
    not_a_folder.write_text("", "utf-8")
    args = ["classification", "--data", str(_topics_csv(tmp_path)), "--name", "t", "--out", str(not_a_folder)]
    assert main([*args, "--dry-run"]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--max-epochs", "--threads"])
def test_a_negative_count_is_refused_by_the_parser(tmp_path: pathlib.Path, flag: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Session 8 outside-in pass: `--max-epochs -1` trained no epoch and then crashed loading a best.pt
    # that was never written (FileNotFoundError traceback, exit 1).
    with pytest.raises(SystemExit) as exit_info:
        main(["classification", "--data", str(_topics_csv(tmp_path)), "--name", "t", flag, "-1", "--dry-run"])
    assert exit_info.value.code == 2
    assert f"{flag}: -1 is negative" in capsys.readouterr().err


def test_version_zero_is_refused_and_leading_zeros_name_the_version_the_server_reads(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="from 1"):
        version_dir(tmp_path, "topics", "0")
    assert version_dir(tmp_path, "topics", "007") == tmp_path / "topics" / "7"


@pytest.mark.parametrize("task", ["classification", "ner", "translation", "recommendation"])
def test_a_folder_or_a_missing_file_as_data_is_named_before_anything_runs(
        tmp_path: pathlib.Path, task: str, capsys: pytest.CaptureFixture[str]) -> None:
    rest = ["--name", "x", "--out", str(tmp_path / "out"), "--dry-run"]
    rest += ["--source-lang", "en", "--target-lang", "el"] if task == "translation" else []
    assert main([task, "--data", str(tmp_path), *rest]) == 2
    assert f"--data {tmp_path} is a folder, not a file" in capsys.readouterr().err
    missing = tmp_path / "nope.csv"
    assert main([task, "--data", str(missing), *rest]) == 2
    assert f"--data {missing} does not exist" in capsys.readouterr().err
