"""Training configs name no machine's absolute path: checkpoints live under one root, <repo>/checkpoints or
$SEQSERVE_CHECKPOINTS (training/configs/checkpoints.py), and a manifest's recorded checkpoint folder is
still found when it was written on another machine (issue #17)."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from training.configs.checkpoints import ENVIRONMENT_VARIABLE, REPO, checkpoint_root, recorded_checkpoint_dir

CONFIG_SOURCES = [*sorted((REPO / "training" / "configs").glob("*.py")), REPO / "training" / "ner_repeated_splits.py"]
CONFIGS = ["ner", "recommendation", "sentiment", "translation_seq2seq", "translation_seq2seq_local",
           "translation_transformer"]


def string_literals(path: pathlib.Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text("utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


@pytest.mark.parametrize("path", CONFIG_SOURCES, ids=lambda p: p.name)
def test_no_config_holds_an_absolute_path(path: pathlib.Path) -> None:
    absolute = [s for s in string_literals(path) if s.startswith("/") and "\n" not in s]
    assert absolute == [], f"{path.name} names {absolute}"


def config_paths(cwd: pathlib.Path, environment: dict[str, str]) -> list[str]:
    """Every checkpoint path the configs hold, as a fresh interpreter started in `cwd` sees them."""
    code = (
        "import dataclasses, importlib, json\n"
        "from training.loop import LoopConfig\n"
        f"modules = [importlib.import_module('training.configs.' + name) for name in {CONFIGS!r}]\n"
        "paths = [value.checkpoint_dir for module in modules for value in vars(module).values()\n"
        "         if isinstance(value, LoopConfig)]\n"
        "paths.append(importlib.import_module('training.configs.translation_seq2seq').SHARED_TOKENIZER)\n"
        "print(json.dumps(sorted(set(paths))))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != ENVIRONMENT_VARIABLE}
    env.update(environment, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    finished = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120, check=True)
    return json.loads(finished.stdout)


def test_checkpoints_default_to_the_repository_from_any_working_directory(tmp_path: pathlib.Path) -> None:
    paths = config_paths(tmp_path, {})
    assert len(paths) == 8  # 7 LoopConfigs and the shared tokenizer
    root = REPO / "checkpoints"
    assert all(pathlib.Path(p).is_relative_to(root) for p in paths), paths
    assert str(root / "translation-transformer" / "tokenizer.json") in paths


def test_the_environment_variable_moves_every_checkpoint(tmp_path: pathlib.Path) -> None:
    elsewhere = tmp_path / "disk"
    paths = config_paths(REPO, {ENVIRONMENT_VARIABLE: str(elsewhere)})
    assert all(pathlib.Path(p).parent == elsewhere for p in paths if not p.endswith(".json")), paths
    assert str(elsewhere / "translation-seq2seq") in paths


def test_checkpoints_are_git_ignored() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", str(REPO / "checkpoints" / "run" / "best.pt")], cwd=REPO)
    assert ignored.returncode == 0


def test_a_recorded_folder_is_used_where_it_exists_else_found_by_name_under_the_root(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(tmp_path / "root"))
    assert checkpoint_root() == tmp_path / "root"
    there = tmp_path / "old-machine" / "translation-seq2seq"
    there.mkdir(parents=True)
    assert recorded_checkpoint_dir(str(there)) == there
    # Recorded on a machine that kept them elsewhere (absolute) or in its own clone (relative): by name.
    root = tmp_path / "root"
    assert recorded_checkpoint_dir("/nowhere/checkpoints/translation-seq2seq") == root / "translation-seq2seq"
    assert recorded_checkpoint_dir("checkpoints/no-such-run-here") == root / "no-such-run-here"


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "")
    assert checkpoint_root() == REPO / "checkpoints"
