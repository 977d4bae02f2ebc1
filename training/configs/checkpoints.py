"""Where training runs keep their checkpoints: one root, `checkpoints/` in the repository (git-ignored)
unless SEQSERVE_CHECKPOINTS names another folder (a larger disk, or the folder outside the clone where
the committed translation and NER versions were trained: docs/ARCHITECTURE.md).

Configs name a run's folder relative to the root (`checkpoint_dir("translation-transformer")`), so no
config holds a machine's absolute path and a fresh clone trains into its own tree from any working
directory.
"""

from __future__ import annotations

import os
import pathlib

ENVIRONMENT_VARIABLE = "SEQSERVE_CHECKPOINTS"
REPO = pathlib.Path(__file__).resolve().parents[2]


def checkpoint_root() -> pathlib.Path:
    """$SEQSERVE_CHECKPOINTS if set (and not empty), else <repo>/checkpoints."""
    return pathlib.Path(os.environ.get(ENVIRONMENT_VARIABLE) or REPO / "checkpoints")


def checkpoint_dir(run: str) -> str:
    """A run's checkpoint folder under the root, as the str LoopConfig.checkpoint_dir holds."""
    return str(checkpoint_root() / run)


def recorded_checkpoint_dir(recorded: str) -> pathlib.Path:
    """The folder a manifest recorded as its run's checkpoint_dir, found on this machine: the recorded path
    if it exists there (absolute, or relative to the repository as older configs wrote it), else the
    folder of the same name under the root (a checkpoint copied from another machine)."""
    path = pathlib.Path(recorded)
    for candidate in (path, REPO / path):
        if candidate.exists():
            return candidate
    return checkpoint_root() / path.name
