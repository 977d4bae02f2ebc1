"""The manifest of one model version: what the files are, their checksums, and what was measured.

A version lives in `exported/<model>/<version>/` beside a `manifest.json`. Training writes the
manifest (through `write_manifest`), the server reads it and refuses the version if any listed file
is missing or differs from its recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from service.model.manifest_schema import FORMAT_VERSION, ManifestModel

MANIFEST_NAME = "manifest.json"


class ManifestError(Exception):
    """The manifest is missing, malformed, or does not match the files beside it."""


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    directory: pathlib.Path
    data: dict[str, Any]     # the JSON as written (records included)
    spec: ManifestModel      # the same, parsed and checked against the contract

    @classmethod
    def from_data(cls, directory: pathlib.Path, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON object, checked against the contract (ManifestError if it is not)."""
        return cls(directory=directory, data=data, spec=parse_manifest(data, directory / MANIFEST_NAME))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def files(self) -> dict[str, str]:
        return dict(self.spec.files)

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.spec.metrics)

    @property
    def dynamically_quantized(self) -> bool:
        """True for an int8 variant made by quantize_dynamic: its activation scales are computed per run
        over the whole batch tensor, so the pipelines run it one request per run."""
        return self.spec.quantization is not None and "quantize_dynamic" in self.spec.quantization.method

    def path(self, file_name: str) -> pathlib.Path:
        return self.directory / file_name


def read_manifest(version_dir: pathlib.Path) -> Manifest:
    path = version_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest is not a JSON object")
    spec = parse_manifest(data, path)
    if spec.version != version_dir.name:
        raise ManifestError(
            f"{path}: manifest says version {data['version']!r} but lives in folder {version_dir.name!r}"
        )
    return Manifest(directory=version_dir, data=data, spec=spec)


def parse_manifest(data: dict[str, Any], path: pathlib.Path) -> ManifestModel:
    """The manifest checked against the contract (service/model/manifest_schema.py); ManifestError names
    the file and every field that is missing, unknown or of the wrong type."""
    if "format_version" not in data:
        raise ManifestError(f"{path}: field format_version is missing (this server reads format {FORMAT_VERSION})")
    if data["format_version"] != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {data['format_version']!r} is not one this server reads "
                            f"(it reads {FORMAT_VERSION})")
    try:
        return ManifestModel.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"field {field}: {message}")
        raise ManifestError(f"{path}: {'; '.join(problems)}") from None


def verify_checksums(manifest: Manifest) -> None:
    """Raise ManifestError naming every file that is missing or whose sha256 differs."""
    problems = []
    for file_name, expected in sorted(manifest.files.items()):
        path = manifest.path(file_name)
        if not path.is_file():
            problems.append(f"{file_name}: missing")
            continue
        actual = sha256_file(path)
        if actual != expected:
            problems.append(f"{file_name}: sha256 {actual[:12]}... != manifest {expected[:12]}...")
    if problems:
        raise ManifestError(
            f"{manifest.name} version {manifest.version} failed checksum verification: "
            + "; ".join(problems)
        )


def write_manifest(version_dir: pathlib.Path, data: dict[str, Any]) -> Manifest:
    """Checksum every file in version_dir (except the manifest) and write manifest.json.

    `data` carries everything else (name, version, task, onnx, labels, metrics, ...).
    """
    files = {
        path.name: sha256_file(path)
        for path in sorted(version_dir.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    }
    full = {"format_version": FORMAT_VERSION, **data, "files": files}
    (version_dir / MANIFEST_NAME).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n", "utf-8")
    return read_manifest(version_dir)


# Written by write_manifest itself: never carried over from the manifest being republished.
_DERIVED_KEYS = ("files", "format_version")


def republish_manifest(
    version_dir: pathlib.Path, changes: Mapping[str, Any] | None = None, drop: Iterable[str] = (),
    source: Manifest | None = None,
) -> Manifest:
    """Rewrite version_dir's manifest from `source` (default: the one there now) with `changes` applied
    and the `drop` keys removed, re-checksumming the folder's files; checked like any manifest.

    The one way tools change a published manifest (new metrics, a new default, a copy as another
    version), so none of them copies stale checksums or an old format_version along.
    """
    source = source or read_manifest(version_dir)
    removed = {*_DERIVED_KEYS, *drop}
    data = {k: v for k, v in source.data.items() if k not in removed}
    data.update(changes or {})
    return write_manifest(version_dir, data)


def with_metrics(
    version_dir: pathlib.Path, metrics: Mapping[str, Any], keep: Iterable[str] = ("challenge",),
) -> Manifest:
    """Republish version_dir with new test metrics, keeping the `keep` records measured apart (the challenge
    sets' figures, written by their own evaluations), so re-running one evaluation does not drop another's."""
    current = read_manifest(version_dir)
    kept = {k: current.metrics[k] for k in keep if k in current.metrics and k not in metrics}
    return republish_manifest(version_dir, {"metrics": {**metrics, **kept}}, source=current)
