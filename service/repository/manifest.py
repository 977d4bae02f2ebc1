"""The manifest of one model version: what the files are, their checksums, and what was measured.

A version lives in `exported/<model>/<version>/` beside a `manifest.json`. Training writes the
manifest (through `write_manifest`), the server reads it and refuses the version if any listed file
is missing or differs from its recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("name", "version", "task", "files", "onnx")


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
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def files(self) -> dict[str, str]:
        return dict(self.data["files"])

    @property
    def labels(self) -> list[str]:
        return list(self.data.get("labels", []))

    @property
    def limits(self) -> dict[str, int]:
        return dict(self.data.get("limits", {}))

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.data.get("metrics", {}))

    @property
    def dynamically_quantized(self) -> bool:
        """True for an int8 variant made by quantize_dynamic: its activation scales are computed per run
        over the whole batch tensor, so the pipelines run it one request per run."""
        return "quantize_dynamic" in str(self.data.get("quantization", {}).get("method", ""))

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
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ManifestError(f"{path}: manifest lacks {', '.join(missing)}")
    if str(data["version"]) != version_dir.name:
        raise ManifestError(
            f"{path}: manifest says version {data['version']!r} but lives in folder {version_dir.name!r}"
        )
    return Manifest(directory=version_dir, data=data)


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
