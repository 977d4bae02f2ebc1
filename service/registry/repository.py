"""The model repository on disk, `<model_dir>/<model>/<version>/`: which models and version folders
are there, and a cheap signature of a folder's files that tells the poller when they changed. It only
discovers; the registry holds what is loaded."""

from __future__ import annotations

import pathlib


def model_names(model_dir: pathlib.Path) -> list[str]:
    """The model folders of the repository, sorted."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    return sorted(p.name for p in model_dir.iterdir() if p.is_dir())


Signature = tuple[tuple[str, int, int], ...]


def files_signature(version_dir: pathlib.Path) -> Signature:
    try:
        return tuple(sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in version_dir.iterdir() if p.is_file()
        ))
    except OSError:
        return ()
