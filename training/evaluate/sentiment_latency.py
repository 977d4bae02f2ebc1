"""Milliseconds per call of sentiment models, side by side on the same texts, one onnxruntime thread.

    python -m training.evaluate.sentiment_latency exported/sentiment-bigru/2 exported/sentiment-minilm-int8/1
        [--texts 500] [--rounds 3] [--write-manifest exported/sentiment-minilm-int8/1]

A call is one text through the served pipeline as the batcher runs it (service.batching.runs.run_pipeline:
tokenise, the emoji table where the version has one, onnxruntime, postprocess); gRPC and batching add
the same on top of every model (docs/benchmarks.md). Texts are --texts sentences of the test split,
evenly spaced through it (so every domain is in, in its share). The models take turns text by text
(round-robin), so a change in the machine's load during the run falls on all of them alike; p50 and p99
are over every call of every round. The machine is shared: the load average at the start and end is
recorded beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time
from typing import Any

from service.batching.runs import run_pipeline
from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.classification import ClassificationPipeline
from service.runtime.version_loader import load_version
from training.data.sentiment import load_splits


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (share in 0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def measure(version_dirs: list[pathlib.Path], texts: list[str], rounds: int = 3) -> dict[str, Any]:
    pipelines = {f"{d.parent.name}/{d.name}": ClassificationPipeline(load_version(d, intra_op_threads=1))
                 for d in version_dirs}
    for pipeline in pipelines.values():  # warm-up: the first runs allocate
        for text in texts[:5]:
            run_pipeline(pipeline, [text])
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    load_before = os.getloadavg()[0]
    for _ in range(rounds):
        for text in texts:
            for name, pipeline in pipelines.items():
                start = time.perf_counter()
                run_pipeline(pipeline, [text])
                times[name].append((time.perf_counter() - start) * 1000)
    load_after = os.getloadavg()[0]
    return {
        "what": "ms per call of one text through the served pipeline (run_pipeline), 1 onnxruntime thread, "
                "models in turn on the same texts",
        "texts": f"{len(texts)} test-split sentences, evenly spaced", "rounds": rounds,
        "load_average_1min": [round(load_before, 2), round(load_after, 2)], "cpus": os.cpu_count(),
        "models": {name: {"p50_ms": round(percentile(values, 0.5), 2), "p99_ms": round(percentile(values, 0.99), 2),
                          "mean_ms": round(statistics.fmean(values), 2), "calls": len(values)}
                   for name, values in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dirs", type=pathlib.Path, nargs="+")
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-manifest", type=pathlib.Path, default=None,
                        help="a version folder whose manifest records the figures as `latency`")
    args = parser.parse_args()
    test = load_splits()[0]["test"]
    texts = [s.text for s in test[:: max(1, len(test) // args.texts)][: args.texts]]
    report = measure(args.version_dirs, texts, args.rounds)
    print(json.dumps(report, indent=1))
    if args.write_manifest:
        republish_manifest(args.write_manifest, {"latency": report}, source=read_manifest(args.write_manifest))


if __name__ == "__main__":
    main()
