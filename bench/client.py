"""The orchestrator's handle on the load client process (bench/loadgen.py run as a subprocess)."""

from __future__ import annotations

import subprocess
import sys

from bench.loadgen import LoadJob, LoadResult, job_to_json, result_from_json


class LoadClient:
    """One long-lived client process: spawning one per run would add start-up noise and seconds."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def run(self, job: LoadJob) -> LoadResult:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(job_to_json(job) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited with {self._process.wait()}")
        return result_from_json(line)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
