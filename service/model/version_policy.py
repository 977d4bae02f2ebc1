"""The version policy: which version folder of a model serves (a pinned one, else the newest)."""

from __future__ import annotations

import pathlib


def version_dirs(model_root: pathlib.Path) -> list[pathlib.Path]:
    """Numeric version folders of one model, oldest first."""
    return sorted(
        (p for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )


def choose_version(model_root: pathlib.Path, pinned: str = "") -> pathlib.Path | None:
    """The version policy: the pinned version if one is configured, else the newest."""
    versions = version_dirs(model_root)
    if pinned:
        versions = [v for v in versions if v.name == pinned]
    return versions[-1] if versions else None
