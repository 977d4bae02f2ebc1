"""The training curve of a recommendation run: dev metrics against training time, as a PNG for the docs.

    python -m training.evaluate.recommendation_curve HISTORY.json|MANIFEST.json OUT.png [--label NAME FILE] [--by-epoch]

HISTORY.json is the loop's `<checkpoint_dir>/history.json` (or a manifest, whose training.history is
used). Extra `--label NAME FILE` pairs draw further runs (e.g. the loss comparison) on the same axes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

METRICS = ("sampled_hr@10", "sampled_ndcg@10", "full_hr@10", "full_ndcg@10")


def read_history(path: pathlib.Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text("utf-8"))
    return data["training"]["history"] if isinstance(data, dict) else data


def plot(runs: dict[str, list[dict[str, Any]]], out: pathlib.Path, by_epoch: bool = False) -> None:
    """Dev curves against training minutes, or against epochs (`by_epoch`: fair between runs that
    shared the CPU with different loads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, history in runs.items():
        xs = [h["epoch"] if by_epoch else h["seconds"] / 60 for h in history]
        for axis, prefix in zip(axes, ("sampled", "full"), strict=True):
            for metric, style in (("hr@10", "-"), ("ndcg@10", "--")):
                axis.plot(xs, [h[f"{prefix}_{metric}"] for h in history], style, marker=".",
                          label=f"{label} {metric.upper()}")
    for axis, title in zip(axes, ("dev, 100 sampled negatives", "dev, full ranking (seen excluded)"), strict=True):
        axis.set_title(title)
        axis.set_xlabel("epoch" if by_epoch else "training minutes (1 thread)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("history", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--name", default="SASRec")
    parser.add_argument("--label", nargs=2, action="append", default=[], metavar=("NAME", "FILE"))
    parser.add_argument("--by-epoch", action="store_true", help="x axis: epochs, not training minutes")
    args = parser.parse_args()
    runs = {args.name: read_history(args.history)}
    runs.update({name: read_history(pathlib.Path(path)) for name, path in args.label})
    plot(runs, args.out, args.by_epoch)


if __name__ == "__main__":
    main()
