"""Section 4 of docs/benchmarks.md (translation decoding), its goals, its plot, and the translation rows
of section 5 (int8 vs fp32)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.goals import Goal
from bench.translation_bench import CANDIDATES, EXPORTED, CaseResult, DecodingResults
from training.export.shared_weights import graph_bytes

CACHE_SPEEDUP = 3.0  # issue 3: ONNX with cache >= 3x torch eager


def _search(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def best(results: DecodingResults, model: str, engine: str, precision: str, batch: int, beam: int) -> CaseResult | None:
    """The engine's best thread setting for that case (each engine gets its own best)."""
    rows = [r for r in results.cases if (r.engine.model, r.engine.engine, r.engine.precision, r.batch, r.beam)
            == (model, engine, precision, batch, beam)]
    return max(rows, key=lambda r: r.tokens) if rows else None


def _ratios(results: DecodingResults, model: str, ours: tuple[str, str], theirs: tuple[str, str]
            ) -> list[tuple[str, float, CaseResult, CaseResult]]:
    found = []
    for batch, beam in results.plan.cases:
        a, b = best(results, model, *ours, batch, beam), best(results, model, *theirs, batch, beam)
        if a is not None and b is not None:
            found.append((f"batch {batch} {_search(beam)}", a.tokens / b.tokens, a, b))
    return found


def _goal(name: str, ratios: list[tuple[str, float, CaseResult, CaseResult]], threshold: float) -> Goal | None:
    if not ratios:
        return None
    measured = "; ".join(f"{case} {ratio:.2f}x ({a.tokens:.0f} vs {b.tokens:.0f} tok/s, {a.engine.threads} vs "
                         f"{b.engine.threads} thr)" for case, ratio, a, b in ratios)
    return Goal(name, measured, min(r for _, r, _, _ in ratios) >= threshold)


def goals(results: DecodingResults) -> list[Goal]:
    found = [
        _goal(f"translation: ONNX with cache >= {CACHE_SPEEDUP:g}x torch eager without cache (transformer, "
              "target tokens/s, every case)", _ratios(results, "transformer", ("onnx", "fp32"),
                                                      ("torch-nocache", "fp32")), CACHE_SPEEDUP),
        _goal("translation: ONNX ahead of CTranslate2, fp32 vs fp32 (transformer, every case)",
              _ratios(results, "transformer", ("onnx", "fp32"), ("ct2", "fp32")), 1.0),
        _goal("translation: ONNX ahead of CTranslate2, int8 vs int8 (transformer, every case)",
              _ratios(results, "transformer", ("onnx", "int8"), ("ct2", "int8")), 1.0),
    ]
    return [g for g in found if g is not None]


def plot(results: DecodingResults, path: pathlib.Path) -> None:
    models = sorted({r.engine.model for r in results.cases}, reverse=True)
    cases = list(results.plan.cases)
    threads = list(results.plan.threads)
    fig, axes = plt.subplots(len(models), len(cases), figsize=(3.6 * len(cases), 0.5 + 2.6 * len(models)),
                             squeeze=False)
    for row, model in enumerate(models):
        labels = list(dict.fromkeys(r.engine.label for r in results.cases if r.engine.model == model))
        for column, (batch, beam) in enumerate(cases):
            ax = axes[row][column]
            height = 0.8 / len(threads)
            for t_index, count in enumerate(threads):
                values = []
                for label in labels:
                    match = [r for r in results.cases if r.engine.model == model and r.engine.label == label
                             and r.engine.threads == count and (r.batch, r.beam) == (batch, beam)]
                    values.append(match[0].tokens if match else 0.0)
                ax.barh([i + t_index * height for i in range(len(labels))], values, height,
                        label=f"{count} thread{'s' if count > 1 else ''}")
            ax.set_yticks([i + height * (len(threads) - 1) / 2 for i in range(len(labels))],
                          labels if column == 0 else [""] * len(labels), fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{model}: batch {batch}, {_search(beam)}", fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_xlabel("target tokens/s", fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def section_lines(results: DecodingResults, images: pathlib.Path, rel: str) -> list[str]:
    lines = ["## 4. Translation decoding", ""]
    if not results.cases:
        return [*lines, f"Not measured: {results.note or 'nothing ran'}.", ""]
    plan = results.plan
    lines += [
        "In-process decoding of held-out test verses ("
        + ", ".join(f"{count} at batch {batch}" for batch, count in plan.texts.items())
        + "; spread over the test chapters; batches group verses of similar length, as the batcher does), "
        "one process per engine and thread count per round, "
        f"{plan.rounds} round(s) in rotated order, {plan.repeats} timed pass(es) of every case in each process, "
        "medians (min-max) over all passes. Every engine gets the same "
        "subword tokens and the same output budget (1.5 x source + 10); beam search uses length penalty 0.6 "
        "(GNMT's in ours, length ** 0.6 in CTranslate2). torch rows run the service's own pipeline and search "
        "code with only the step engine swapped (bench/translation_engines.py). \"same\" = outputs identical to "
        "the served ONNX fp32 pipeline's on the same case.", "",
    ]
    if results.note:
        lines += [f"Note: {results.note}.", ""]
    rows = []
    for r in sorted(results.cases, key=lambda r: (r.engine.model != "transformer", r.batch, r.beam,
                                                  r.engine.label, r.engine.threads)):
        rows.append([r.engine.model, r.engine.label, str(r.engine.threads), str(r.batch), _search(r.beam),
                     f"{r.sentences:.1f}",
                     f"{r.tokens:.0f} ({min(r.tokens_per_s):.0f}-{max(r.tokens_per_s):.0f})",
                     f"{r.same_as_onnx[0]}/{r.same_as_onnx[1]}"])
    lines += _table(["model", "engine", "threads", "batch", "search", "sentences/s", "target tokens/s", "same"], rows)
    lines += ["", "Ratios, each engine at its best thread count (target tokens/s):", ""]
    ratio_rows = []
    for model, ours, theirs in (("transformer", ("onnx", "fp32"), ("torch-nocache", "fp32")),
                                ("transformer", ("onnx", "fp32"), ("torch-cache", "fp32")),
                                ("transformer", ("onnx", "fp32"), ("ct2", "fp32")),
                                ("transformer", ("ort-beamsearch", "fp32"), ("onnx", "fp32")),
                                ("transformer", ("onnx", "int8"), ("ct2", "int8")),
                                ("transformer", ("onnx", "int8"), ("onnx", "fp32")),
                                ("seq2seq-attention", ("onnx", "fp32"), ("torch", "fp32")),
                                ("seq2seq-attention", ("onnx", "int8"), ("onnx", "fp32"))):
        found = {case: (ratio, a, b) for case, ratio, a, b in _ratios(results, model, ours, theirs)}
        if found:
            _, a, b = next(iter(found.values()))
            ratio_rows.append([model, f"{a.engine.label} / {b.engine.label}",
                               *(f"{found[case][0]:.2f}x" if case in found else "-"
                                 for case in (f"batch {b} {_search(k)}" for b, k in plan.cases))])
    lines += _table(["model", "ratio", *(f"batch {b} {_search(k)}" for b, k in plan.cases)], ratio_rows)
    plot(results, images / "decoding.png")
    lines += ["", f"![decoding]({rel}/decoding.png)", ""]
    lines += [f"- {error}" for error in results.errors]
    return lines


def int8_lines(results: DecodingResults | None) -> list[str]:
    """Section 5's translation rows: quality from the manifests (measured through the served pipeline on
    the test chapters at export), speed from section 4 (ONNX int8 / fp32, 1 thread)."""
    rows = []
    for model in ("transformer", "seq2seq-attention"):
        for root in (EXPORTED / model, EXPORTED / f"{model}-int8", CANDIDATES / f"{model}-int8"):
            versions = [p for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
            if not versions:
                continue
            version = max(versions, key=lambda p: int(p.name))
            manifest = json.loads((version / "manifest.json").read_text("utf-8"))
            metrics = manifest.get("metrics", {})
            if "greedy" not in metrics:
                continue
            published = "" if root.parent == EXPORTED else " (not published)"
            delta = manifest.get("quantization", {}).get("quality_delta_vs_fp32", {})
            rows.append([f"{manifest['name']} v{manifest['version']}{published}",
                         f"{graph_bytes(version, manifest) / 1e6:.1f}",
                         *(f"{metrics[s]['bleu']:.2f} / {metrics[s]['chrf']:.2f}"
                           + (f" ({delta[s]['bleu']:+.2f} / {delta[s]['chrf']:+.2f})" if s in delta else "")
                           for s in ("greedy", "beam4"))])
    if not rows:
        return []
    lines = ["Translation: quality on the 1,091 test verses through the served pipeline (manifests; "
             "delta vs fp32 in brackets), graph megabytes:", ""]
    lines += _table(["variant", "graphs MB", "greedy BLEU / chrF", "beam 4 BLEU / chrF"], rows)
    if results is not None and results.cases:
        speed = []
        for model in ("transformer", "seq2seq-attention"):
            found = _ratios_at(results, model, 1)
            if found:
                speed.append([model, *found])
        if speed:
            lines += ["", "Speed int8 / fp32 (ONNX pipeline, 1 thread, target tokens/s, section 4's run):", ""]
            lines += _table(["model", *(f"batch {b} {_search(k)}" for b, k in results.plan.cases)], speed)
    return [*lines, ""]


def _ratios_at(results: DecodingResults, model: str, threads: int) -> list[str]:
    cells = []
    for batch, beam in results.plan.cases:
        pick = {r.engine.precision: r for r in results.cases if r.engine.model == model and r.engine.engine == "onnx"
                and r.engine.threads == threads and (r.batch, r.beam) == (batch, beam)}
        if "fp32" not in pick or "int8" not in pick:
            return []
        cells.append(f"{pick['int8'].tokens / pick['fp32'].tokens:.2f}x")
    return cells


def summary(results: DecodingResults) -> Sequence[str]:
    return [f"{g.goal}: {g.measured}" for g in goals(results)]
