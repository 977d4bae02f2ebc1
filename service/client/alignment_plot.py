"""The attention alignment of one translation as a PNG heatmap (source tokens on x, target on y).

matplotlib is a client-side extra (`pip install 'seqserve[client]'`): the server never imports this.
"""

from __future__ import annotations

import pathlib

import numpy as np
from seqserve.v1 import translation_pb2


class PlottingUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def alignment_matrix(alignment: translation_pb2.Alignment) -> np.ndarray:
    """weights as [target, source]."""
    return np.asarray(alignment.weights, dtype=np.float32).reshape(
        len(alignment.target_tokens), len(alignment.source_tokens))


def save_alignment_png(alignment: translation_pb2.Alignment, path: pathlib.Path, title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed, none assumed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlottingUnavailableError(
            "--alignment-png needs matplotlib: pip install 'seqserve[client]'") from exc
    weights = alignment_matrix(alignment)
    rows, columns = weights.shape
    # About 0.35 inch per token keeps labels legible for verse-length sentences.
    figure, axes = plt.subplots(figsize=(max(4.0, 0.35 * columns + 2), max(3.0, 0.3 * rows + 1.5)))
    image = axes.imshow(weights, cmap="Greys", aspect="auto", vmin=0.0, vmax=max(float(weights.max(initial=0)), 1e-6))
    axes.set_xticks(range(columns), list(alignment.source_tokens), rotation=90, fontsize=8)
    axes.set_yticks(range(rows), list(alignment.target_tokens), fontsize=8)
    axes.set_xlabel("source tokens")
    axes.set_ylabel("target tokens")
    if title:
        axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.02, label="cross-attention")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
