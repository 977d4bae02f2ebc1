"""The model repository refuses versions whose files do not match their manifest (checked through the
ModelManager, the code path the server runs), and what serves when a version's folder is deleted."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import shutil
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from exported_models import SENTIMENT, copy_as_version

from service.metrics.registry import ServingMetrics
from service.model.manifest import ManifestError, read_manifest, verify_checksums, write_manifest
from service.model.model_config import BatchConfig, load_model_config
from service.registry.manager import ModelManager, VersionState
from service.registry.registry import ModelNotFoundError
from service.runtime.threads import ThreadBudget

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


def test_a_missing_file_is_refused(repo_copy) -> None:
    (repo_copy / "sentiment-bigru/1/tokenizer.json").unlink()
    with pytest.raises(ManifestError, match=r"tokenizer\.json: missing"):
        verify_checksums(read_manifest(repo_copy / "sentiment-bigru/1"))


# -- a serving version's folder deleted under the manager -----------------------------------------

FOLDER_GONE = "was deleted; still serving it from memory"


def with_manager(model_dir: pathlib.Path, steps: Callable[[ModelManager], Awaitable[None]]) -> None:
    """Run `steps` against a real manager on `model_dir` (each `sync()` is one repository poll)."""
    async def run() -> None:
        with ThreadPoolExecutor(1) as executor:
            manager = ModelManager(model_dir, load_model_config(None, BatchConfig()), ThreadBudget(1, 1, False, "test"),
                                   ServingMetrics(), executor)
            try:
                await steps(manager)
            finally:
                await manager.close()

    asyncio.run(run())


def states(manager: ModelManager) -> list[tuple[str, str]]:
    return [(state.version, state.state) for state in manager.list_versions("sentiment-bigru")]


async def still_answers(manager: ModelManager, version: str) -> None:
    result = await manager.batchers["sentiment-bigru"].submit(["a lovely film"])
    assert result.model.version == version and len(result.outputs) == 1


def test_a_deleted_serving_folder_keeps_serving_warns_once_and_is_listed_as_serving(
        repo_copy: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    async def steps(manager: ModelManager) -> None:
        await manager.sync()
        shutil.rmtree(repo_copy / "sentiment-bigru" / "1")
        with caplog.at_level(logging.WARNING, logger="service.registry.manager"):
            for _ in range(3):
                await manager.sync()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once, not once per poll
        assert FOLDER_GONE in warnings[0].getMessage()
        assert str(repo_copy / "sentiment-bigru" / "1") in warnings[0].getMessage()
        # GetModel reads repository.models; ListVersions reads list_versions: both say version 1 serves.
        assert manager.registry.models["sentiment-bigru"].version == "1"
        (listed,) = manager.list_versions("sentiment-bigru")
        assert (listed.version, listed.state) == ("1", "SERVING")
        assert "sentiment-bigru/1 was deleted" in listed.reason and str(repo_copy) not in listed.reason
        await still_answers(manager, "1")

        # A new version published afterwards replaces it, as any new version does.
        copy_as_version(SENTIMENT, repo_copy / "sentiment-bigru" / "2", "2")
        await manager.sync()
        assert states(manager) == [("2", "SERVING")]

    with_manager(repo_copy, steps)


def test_a_deleted_model_folder_keeps_its_version_listed_as_serving(repo_copy: pathlib.Path) -> None:
    async def steps(manager: ModelManager) -> None:
        await manager.sync()
        shutil.rmtree(repo_copy / "sentiment-bigru")
        await manager.sync()
        assert manager.list_versions() == manager.list_versions("sentiment-bigru")
        assert states(manager) == [("1", "SERVING")]
        await still_answers(manager, "1")

    with_manager(repo_copy, steps)


def test_when_the_serving_folder_is_deleted_the_policy_moves_to_the_version_left_on_disk(
        repo_copy: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    copy_as_version(SENTIMENT, repo_copy / "sentiment-bigru" / "2", "2")

    async def steps(manager: ModelManager) -> None:
        await manager.sync()
        assert states(manager) == [("1", "AVAILABLE"), ("2", "SERVING")]
        shutil.rmtree(repo_copy / "sentiment-bigru" / "2")
        with caplog.at_level(logging.WARNING, logger="service.registry.manager"):
            await manager.sync()
        assert FOLDER_GONE in caplog.text
        assert manager.list_versions("sentiment-bigru") == [VersionState("sentiment-bigru", "1", "SERVING")]
        await still_answers(manager, "1")

    with_manager(repo_copy, steps)


# -- refusals and the default model, through the manager the server runs -------------------------

def test_a_corrupted_model_file_is_refused_with_a_clear_log_line(
        repo_copy: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    flip_a_byte(repo_copy / "sentiment-bigru/1/model.onnx")

    async def steps(manager: ModelManager) -> None:
        with caplog.at_level(logging.ERROR, logger="service.registry.manager"):
            await manager.sync()
        assert manager.registry.models == {}
        assert [f.model for f in manager.registry.failures] == ["sentiment-bigru"]
        assert "model.onnx: sha256" in caplog.text and "checksum" in caplog.text
        assert states(manager) == [("1", "FAILED")]

    with_manager(repo_copy, steps)


def test_newest_version_wins_and_a_bad_model_does_not_hide_the_others(repo_copy: pathlib.Path) -> None:
    copy_as_version(SENTIMENT, repo_copy / "sentiment-bigru" / "2", "2")
    shutil.copytree(repo_copy / "sentiment-bigru" / "1", repo_copy / "sentiment-copy" / "1")
    manifest = read_manifest(repo_copy / "sentiment-copy/1")
    write_manifest(repo_copy / "sentiment-copy/1", {**manifest.data, "name": "sentiment-copy"})
    flip_a_byte(repo_copy / "sentiment-copy/1/tokenizer.json")

    async def steps(manager: ModelManager) -> None:
        await manager.sync()
        assert {name: model.version for name, model in manager.registry.models.items()} == {"sentiment-bigru": "2"}
        assert [(f.model, f.version) for f in manager.registry.failures] == [("sentiment-copy", "1")]
        assert manager.registry.get("sentiment").name == "sentiment-bigru"

    with_manager(repo_copy, steps)


def test_unknown_model_or_task_raises_not_found(repo_copy: pathlib.Path) -> None:
    async def steps(manager: ModelManager) -> None:
        await manager.sync()
        assert manager.registry.get("sentiment").name == "sentiment-bigru"
        with pytest.raises(ModelNotFoundError, match="nope"):
            manager.registry.get("sentiment", "nope")
        with pytest.raises(ModelNotFoundError):
            manager.registry.get("translation")

    with_manager(repo_copy, steps)
