"""The benchmark harness's quick mode, end to end, so the harness cannot rot between full runs."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from exported_models import latest_version_dir

from bench.converters.version_weights import torch_weights_source

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_quick_benchmark_runs_every_scenario_and_writes_the_report(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "benchmarks.md"
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--out", str(out)],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = out.read_text("utf-8")
    for heading in ("## Machine", "## Goals", "## 1. Overhead", "## 2. Dynamic batching", "## 3. Peer server",
                    "## 4. Translation decoding", "## 5. int8 vs fp32", "## 6. Cold start and memory",
                    "## 7. Worker processes", "## 8. The Python gRPC floor", "## 9. Translation scheduling"):
        assert heading in report
    assert "Failed calls in the whole run: 0." in report
    # Every configuration was measured at every concurrency (the goals read these rows).
    for row in ("seqserve task API, batching on | 64", "seqserve task API, batching off | 64",
                "seqserve V2 ModelInfer | 64", "seqserve task API int8, batching on | 64"):
        assert row in report
    # Section 7: 1 vs 2 worker processes, both measured and compared.
    assert "| seqserve --workers 2 |" in report and "2 workers / 1 worker:" in report
    # Section 8: seqserve and the bare grpc.aio echo at 1 and 64 in flight, the ratios and their goals.
    for row in ("| seqserve task API, batching on | 1 |", "| echo (bare grpc.aio, the floor) | 64 |"):
        assert row in report, row
    assert "seqserve task API, batching on / echo at 64 in flight:" in report
    assert "of the bare grpc.aio echo's calls/s at 64 in flight" in finished.stdout
    for image in ("overhead", "batching", "peer", "int8", "decoding"):
        assert (tmp_path / "benchmarks" / f"{image}.png").stat().st_size > 1000
    # Section 4: every decoding engine ran in the quick mode too, greedy and beam, with its goals evaluated.
    for row in ("| transformer | ONNX + cache (served pipeline) fp32 | 1 | 1 | greedy |",
                "| transformer | torch eager, no cache fp32 | 1 | 2 | beam 4 |",
                "| transformer | CTranslate2 int8 | 1 | 1 | greedy |"):
        assert row in report, row
    # The GRU model's torch weights are its training checkpoint: measured where it exists, else the
    # report says why the row is missing (a fresh clone, CI) instead of failing the whole section.
    seq2seq_torch = torch_weights_source(latest_version_dir("seq2seq-attention"))
    if seq2seq_torch.exists():
        assert "| seq2seq-attention | torch eager fp32 | 1 | 2 | beam 4 |" in report
    else:
        assert f"torch eager for seq2seq-attention: its weights ({seq2seq_torch}) are not here" in report
    assert "decoding worker failed" not in report + finished.stderr
    assert "ONNX with cache >= 3x torch eager without cache" in finished.stdout
    # Section 9: both scheduling modes measured on their own servers, and in-process beside CTranslate2.
    for row in ("| iteration-level (default) |", "| batch at a time (`--decode-scheduling batch`) |",
                "| int8 | 2 | 4 |"):
        assert row in report, row
    assert "Iteration-level / batch at a time: mixed traffic" in report
    assert "light p99 with a heavy call in flight <= 3x idle" in finished.stdout
    assert "served/raw <= 1.3x" in finished.stdout  # the goals are evaluated, met or not
