"""PNG plots for docs/benchmarks.md (matplotlib, no display needed)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or in CI
import matplotlib.pyplot as plt

from bench.scenarios import OverheadRow, VariantSpeed
from bench.stats import Summary


def overhead_plot(rows: Sequence[OverheadRow], path: pathlib.Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [row.server for row in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r.raw.p50_ms for r in rows], 0.4, label="in-process onnxruntime")
    ax.bar([i + 0.2 for i in x], [r.served.p50_ms for r in rows], 0.4, label="served (gRPC)")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("p50 latency, ms (batch 1)")
    ax.legend(fontsize=8)
    _save(fig, path)


def concurrency_plot(table: dict[str, dict[int, Summary]], labels: Sequence[str], path: pathlib.Path,
                     title: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label in labels:
        points = sorted(table[label].items())
        clients = [c for c, _ in points]
        left.plot(clients, [s.throughput for _, s in points], marker="o", label=label)
        right.plot(clients, [s.p99_ms for _, s in points], marker="o", label=label)
    for ax, ylabel in ((left, "calls/s (median of runs)"), (right, "p99 latency, ms (median of runs)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
    right.set_yscale("log")
    left.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def variant_plot(variants: Sequence[VariantSpeed], path: pathlib.Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [v.name for v in variants]
    left.bar(names, [v.batch1.p50_ms for v in variants])
    left.set_title("batch 1, p50 ms", fontsize=9)
    right.bar(names, [v.batch32.p50_ms for v in variants])
    right.set_title("batch 32, p50 ms", fontsize=9)
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7)
    _save(fig, path)


def _save(fig: plt.Figure, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
