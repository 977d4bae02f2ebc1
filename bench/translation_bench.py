"""Section 4: translation decoding speed, every engine in its own process, rounds interleaved.

    python -m bench.translation_bench [--quick]      (section 4 alone, printed; `python -m bench run` runs it too)

Engines (bench/translation_engines.py): the served ONNX pipeline with its cache (fp32, and the int8
variant when one is exported), onnxruntime's BeamSearch op on the same graphs (beam cases), torch eager
without cache (the naive baseline) and with it, CTranslate2 fp32 and int8 on the same Transformer
weights; for the GRU seq2seq model ONNX vs torch eager. Each
(engine, intra-op threads) runs in a fresh process per round (OMP_NUM_THREADS set before it starts),
the order rotated every round, each case timed `repeats` times in it; every figure is the median.
Texts: held-out test verses, spread over the test chapters (every n-th verse), batches of similar length.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.servers import REPO

EXPORTED = REPO / "exported"
CT2_CACHE = REPO / ".cache" / "ct2"
# Int8 variants measured but not published (over the size budget, or no gain): docs/translation.md.
CANDIDATES = REPO / ".cache" / "int8-candidates"


@dataclass(frozen=True)
class DecodingPlan:
    rounds: int                          # fresh processes per engine, in rotated order
    repeats: int                         # timed passes of every case inside each process
    threads: tuple[int, ...]
    cases: tuple[tuple[int, int], ...]   # (batch size, beam size); beam 1 = greedy
    texts: dict[int, int]                # batch size -> how many test verses
    shortest: bool                       # quick: the shortest verses (seconds, not minutes)
    one_process: bool                    # quick: every engine in one process


# Sized to run in about six minutes on 2 free cores (the whole `bench run` must fit in the ~10 minutes
# other jobs may be paused for): one process per engine and thread count, two timed passes in it.
FULL_DECODING = DecodingPlan(rounds=1, repeats=2, threads=(1, 2), cases=((1, 1), (1, 4), (32, 1), (32, 4)),
                             texts={1: 8, 32: 32}, shortest=False, one_process=False)
QUICK_DECODING = DecodingPlan(rounds=1, repeats=1, threads=(1,), cases=((1, 1), (2, 4)), texts={1: 2, 2: 2},
                              shortest=True, one_process=True)


@dataclass(frozen=True)
class Engine:
    model: str          # the fp32 model it stands for: transformer, seq2seq-attention
    engine: str         # onnx, torch-nocache, torch-cache, torch, ct2
    precision: str      # fp32, int8
    version_dir: str
    threads: int

    @property
    def label(self) -> str:
        names = {"onnx": "ONNX + cache (served pipeline)", "onnx-scheduled": "ONNX + cache, step scheduler",
                 "onnx-batch": "ONNX + cache, batch at a time in served runs",
                 "ort-beamsearch": "ONNX BeamSearch op",
                 "torch-nocache": "torch eager, no cache",
                 "torch-cache": "torch eager + cache", "torch": "torch eager", "ct2": "CTranslate2"}
        return f"{names[self.engine]} {self.precision}"


@dataclass
class CaseResult:
    engine: Engine
    batch: int
    beam: int
    sentences_per_s: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    outputs: list[list[str]] = field(default_factory=list)  # of the first round
    same_as_onnx: tuple[int, int] = (0, 0)                  # outputs equal to ONNX fp32's, of how many

    @property
    def sentences(self) -> float:
        return statistics.median(self.sentences_per_s)

    @property
    def tokens(self) -> float:
        return statistics.median(self.tokens_per_s)


@dataclass
class DecodingResults:
    plan: DecodingPlan
    cases: list[CaseResult]
    texts: int
    note: str = ""
    errors: list[str] = field(default_factory=list)


def _newest(model_root: pathlib.Path) -> pathlib.Path | None:
    if not model_root.is_dir():
        return None
    versions = [p for p in model_root.iterdir() if p.name.isdigit() and (p / "manifest.json").exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def ct2_available() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def torch_unavailable(version_dir: pathlib.Path) -> str:
    """Why torch cannot run this version's weights here ("" if it can): a seq2seq version's torch weights
    are its training checkpoint, which only the machine that trained it has."""
    from bench.converters.version_weights import torch_weights_source

    source = torch_weights_source(version_dir)
    return "" if source.exists() else f"torch eager for {version_dir.parent.name}: its weights ({source}) are not here"


def engines(threads: int, skipped: list[str] | None = None) -> list[Engine]:
    """Every engine that can run here; the reasons for the others go to `skipped`."""
    found: list[Engine] = []
    for model, torch_engines, ct2 in (("transformer", ("torch-nocache", "torch-cache"), True),
                                      ("seq2seq-attention", ("torch",), False)):
        fp32 = _newest(EXPORTED / model)
        if fp32 is None:
            continue
        int8 = _newest(EXPORTED / f"{model}-int8") or _newest(CANDIDATES / f"{model}-int8")
        found.append(Engine(model, "onnx", "fp32", str(fp32), threads))
        if int8 is not None:
            found.append(Engine(model, "onnx", "int8", str(int8), threads))
        if model == "transformer":  # the op's encoder-decoder contract is the Transformer's (T5's)
            found += [Engine(model, "ort-beamsearch", precision, str(path), threads)
                      for precision, path in (("fp32", fp32), ("int8", int8)) if path is not None]
        reason = torch_unavailable(fp32)
        if reason:
            if skipped is not None and reason not in skipped:
                skipped.append(reason)
        else:
            found += [Engine(model, name, "fp32", str(fp32), threads) for name in torch_engines]
        if ct2 and ct2_available():
            found += [Engine(model, "ct2", precision, str(fp32), threads) for precision in ("fp32", "int8")]
    return found


def test_texts(plan: DecodingPlan) -> dict[int, list[str]]:
    from training.data.translation import load_splits  # the data package: a training-side dependency

    test = [pair.english for pair in load_splits()[0]["test"]]
    if plan.shortest:
        test = sorted(test, key=len)
        return {batch: test[:count] for batch, count in plan.texts.items()}
    return {batch: test[:: max(1, len(test) // count)][:count] for batch, count in plan.texts.items()}


def _run_worker(specs: Sequence[Engine], plan: DecodingPlan, texts: dict[int, list[str]]) -> list[dict[str, Any]]:
    keys = ("model", "engine", "version_dir", "threads", "precision")
    job = {"engines": [{k: getattr(s, k) for k in keys} for s in specs],
           "cases": [list(c) for c in plan.cases], "texts": {str(k): v for k, v in texts.items()},
           "repeats": plan.repeats,
           "ct2_cache": str(CT2_CACHE)}
    threads = str(max(s.threads for s in specs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    finished = subprocess.run([sys.executable, "-m", "bench.translation_worker", json.dumps(job)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=3600, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"decoding worker failed ({finished.returncode}): {finished.stderr[-2000:]}")
    return json.loads(finished.stdout)


def run_decoding(plan: DecodingPlan) -> DecodingResults:
    skipped: list[str] = []
    configs = [e for threads in plan.threads for e in engines(threads, skipped)]
    if not configs:
        return DecodingResults(plan, [], 0, note="no translation model is exported")
    texts = test_texts(plan)
    if not ct2_available():
        skipped.append("CTranslate2 is not installed (`pip install -e '.[test]'`): its rows are missing")
    note = "; ".join(skipped)
    results: dict[tuple[Engine, int, int], CaseResult] = {}
    errors: list[str] = []
    for round_index in range(plan.rounds):
        start = round_index % len(configs)
        order = configs[start:] + configs[:start]
        groups = [order] if plan.one_process else [[e] for e in order]
        for group in groups:
            try:
                reports = _run_worker(group, plan, texts)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
                errors.append(f"{', '.join(e.label for e in group)}: {error}")
                continue
            for spec, report in zip(group, reports, strict=True):
                for case in report["cases"]:
                    row = results.setdefault((spec, case["batch"], case["beam"]),
                                             CaseResult(spec, case["batch"], case["beam"]))
                    row.sentences_per_s += [case["sentences"] / seconds for seconds in case["seconds"]]
                    row.tokens_per_s += [case["target_tokens"] / seconds for seconds in case["seconds"]]
                    row.outputs = row.outputs or case["outputs"]
    rows = list(results.values())
    for row in rows:  # agreement with the served fp32 pipeline on the same case (first thread setting)
        reference = next((r for r in rows if r.engine.model == row.engine.model and r.engine.engine == "onnx"
                          and r.engine.precision == "fp32" and (r.batch, r.beam) == (row.batch, row.beam)), None)
        if reference is not None:
            row.same_as_onnx = (sum(a == b for a, b in zip(row.outputs, reference.outputs, strict=True)),
                                len(row.outputs))
    return DecodingResults(plan, rows, sum(len(v) for v in texts.values()), note, errors)


def main() -> None:
    from bench.translation_report import section_lines

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=pathlib.Path, default=REPO / ".cache" / "bench" / "decoding")
    args = parser.parse_args()
    results = run_decoding(QUICK_DECODING if args.quick else FULL_DECODING)
    print("\n".join(section_lines(results, args.images, args.images.name)))
    for error in results.errors:
        print(f"error: {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
