"""The model repository refuses versions whose files do not match their manifest."""

from __future__ import annotations

import logging
import pathlib
import shutil

import pytest
from exported_models import SENTIMENT, copy_as_version

from service.repository.manifest import ManifestError, read_manifest, verify_checksums, write_manifest
from service.repository.repository import ModelNotFoundError, load_repository

EXPORTED = pathlib.Path(__file__).resolve().parents[1] / "exported"


@pytest.fixture
def repo_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    copy_as_version(SENTIMENT, tmp_path / "sentiment-bigru" / "1", "1")
    return tmp_path


def flip_a_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_committed_models_pass_their_checksums() -> None:
    for manifest_path in EXPORTED.glob("*/*/manifest.json"):
        verify_checksums(read_manifest(manifest_path.parent))


def test_every_file_of_a_version_is_covered_by_the_manifest() -> None:
    for manifest_path in EXPORTED.glob("*/*/manifest.json"):
        manifest = read_manifest(manifest_path.parent)
        on_disk = {p.name for p in manifest_path.parent.iterdir() if p.name != "manifest.json"}
        assert set(manifest.files) == on_disk


def test_a_corrupted_model_file_is_refused_with_a_clear_log_line(repo_copy, caplog) -> None:
    flip_a_byte(repo_copy / "sentiment-bigru/1/model.onnx")
    with caplog.at_level(logging.ERROR):
        repository = load_repository(repo_copy)
    assert repository.models == {}
    assert [f.model for f in repository.failures] == ["sentiment-bigru"]
    assert "model.onnx: sha256" in caplog.text and "checksum" in caplog.text


def test_a_missing_file_is_refused(repo_copy) -> None:
    (repo_copy / "sentiment-bigru/1/tokenizer.json").unlink()
    with pytest.raises(ManifestError, match=r"tokenizer\.json: missing"):
        verify_checksums(read_manifest(repo_copy / "sentiment-bigru/1"))


def test_newest_version_wins_and_a_bad_one_does_not_hide_the_others(repo_copy) -> None:
    shutil.copytree(repo_copy / "sentiment-bigru", repo_copy / "sentiment-copy")
    manifest = read_manifest(repo_copy / "sentiment-copy/1")
    write_manifest(repo_copy / "sentiment-copy/1", {**manifest.data, "name": "sentiment-copy"})
    flip_a_byte(repo_copy / "sentiment-bigru/1/tokenizer.json")
    repository = load_repository(repo_copy)
    assert list(repository.models) == ["sentiment-copy"]
    assert repository.get("sentiment").name == "sentiment-copy"


def test_unknown_model_or_task_raises_not_found(repo_copy) -> None:
    repository = load_repository(repo_copy)
    assert repository.get("sentiment").name == "sentiment-bigru"
    with pytest.raises(ModelNotFoundError, match="nope"):
        repository.get("sentiment", "nope")
    with pytest.raises(ModelNotFoundError):
        repository.get("translation")
