"""What the numbers were measured on: cores, CPU, memory, versions, and what else was running."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess
from importlib import metadata


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text("utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text("utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return 0.0


def busy_processes(exclude: set[int], min_cpu: float = 5.0) -> list[str]:
    """Other processes using CPU now (ps %CPU is averaged over each process's life, so it is a hint)."""
    out = subprocess.run(["ps", "-eo", "pid=,pcpu=,stat=,args="], capture_output=True, text=True, check=False).stdout
    busy = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or int(parts[0]) in exclude:
            continue
        pid, cpu, stat, args = parts
        if float(cpu) >= min_cpu or "T" in stat:
            busy.append(f"pid {pid} {cpu}% cpu{' (stopped)' if 'T' in stat else ''}: {args[:90]}")
    return busy


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def describe(exclude: set[int]) -> dict[str, object]:
    return {
        "cores (affinity)": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory": f"{_memory_gib():.1f} GiB",
        "load average (1, 5, 15 min) at start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "grpcio": _version("grpcio"),
        "other busy or stopped processes": busy_processes(exclude) or ["none"],
    }
