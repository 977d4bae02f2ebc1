"""Where the tests find the committed models: the newest version of each, so retraining a model
(a new version folder) does not mean rewriting the tests."""

from __future__ import annotations

import pathlib
import shutil

from service.model.manifest import read_manifest, republish_manifest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPORTED = REPO / "exported"


def latest_version_dir(model: str) -> pathlib.Path:
    versions = [p for p in (EXPORTED / model).iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


SENTIMENT = latest_version_dir("sentiment-bigru")


def default_version_dir(task: str) -> pathlib.Path:
    """The newest version of the committed model a call of `task` that names no model gets."""
    defaults = [latest_version_dir(p.name) for p in sorted(EXPORTED.iterdir()) if p.is_dir()
                and (manifest := read_manifest(latest_version_dir(p.name))).task == task
                and manifest.spec.default_for_task]
    assert len(defaults) == 1, f"{task}: {len(defaults)} committed defaults"
    return defaults[0]


# What Sentiment.Analyze answers with when no model is named (sentiment-minilm-int8 since it beat VADER
# everywhere, docs/sentiment.md); SENTIMENT stays the BiGRU the tests copy, name and batch.
DEFAULT_SENTIMENT = default_version_dir("sentiment")


def copy_as_version(source: pathlib.Path, destination: pathlib.Path, version: str) -> pathlib.Path:
    """Copy a version folder to `destination` (named as the version) with its manifest re-versioned."""
    shutil.copytree(source, destination)
    source_manifest = read_manifest(source)
    (destination / "manifest.json").unlink()
    republish_manifest(destination, {"version": version}, source=source_manifest)
    return destination
