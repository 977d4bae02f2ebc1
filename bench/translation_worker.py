"""One decoding engine in its own process: time every case once, print the results as JSON.

    python -m bench.translation_worker '<json job>'

Job: {"engines": [{"engine", "version_dir", "threads", "precision"}...], "cases": [[batch, beam]...],
"texts": {"<batch>": [...]}, "ct2_cache": "..."}. The thread count is also set in OMP_NUM_THREADS by the
parent before this process starts (torch and CTranslate2 read it at import).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

from bench.translation_engines import Translator


def batches(texts: list[str], size: int) -> list[list[str]]:
    """Similar lengths together, as the server's batcher and the evaluation group them."""
    ordered = sorted(texts, key=len)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def time_case(translator: Translator, texts: list[str], batch: int, beam: int, repeats: int = 1) -> dict[str, Any]:
    """Every text translated `repeats` times (seconds per pass); outputs of the first pass."""
    translator.translate(texts[:batch][:2], beam)  # warm-up: first shapes, allocator, lazy inits
    outputs: dict[str, list[str]] = {}
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        for chunk in batches(texts, batch):
            for text, tokens in zip(chunk, translator.translate(chunk, beam), strict=True):
                outputs.setdefault(text, tokens)
        seconds.append(time.perf_counter() - began)
    return {"batch": batch, "beam": beam, "seconds": seconds, "sentences": len(texts),
            "target_tokens": sum(len(t) for t in outputs.values()),
            "outputs": [outputs[t] for t in texts]}


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for spec in job["engines"]:
        began = time.perf_counter()
        translator = Translator(spec["engine"], pathlib.Path(spec["version_dir"]), int(spec["threads"]),
                                spec["precision"], pathlib.Path(job["ct2_cache"]))
        load_seconds = time.perf_counter() - began
        cases = [time_case(translator, job["texts"][str(batch)], batch, beam, int(job.get("repeats", 1)))
                 for batch, beam in job["cases"] if translator.supports(beam)]
        results.append({**spec, "load_seconds": load_seconds, "cases": cases})
    return results


def main() -> None:
    print(json.dumps(run(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
