"""Start MLServer (its own virtualenv: it pins other grpcio/protobuf versions) on one .onnx, with
adaptive batching on, and the runtime in onnx_runtime.py."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import time

from bench.servers import REPO, Server, free_port, v2_model_ready

VENV = REPO / ".cache" / "bench" / "mlserver-venv"
MLSERVER_VERSION = "1.7.1"
# MLServer 1.7.1 calls asyncio.get_event_loop() in its worker processes, which uvloop >= 0.22 refuses
# (RuntimeError, the server exits at start); the newest uvloop that still allows it:
UVLOOP_VERSION = "0.21.0"


def mlserver_available() -> bool:
    return (VENV / "bin" / "mlserver").exists()


def install_hint() -> str:
    return (f"python3.11 -m venv {VENV.relative_to(REPO)} && {VENV.relative_to(REPO)}/bin/pip install "
            f"mlserver=={MLSERVER_VERSION} onnxruntime==1.32.0 uvloop=={UVLOOP_VERSION}")


def start_mlserver(model_name: str, onnx_path: pathlib.Path, work_dir: pathlib.Path, max_batch_size: int = 32,
                   max_batch_time_s: float = 0.005) -> Server:
    """Batching settings default to seqserve's (32 texts, 5 ms) so the two batchers are comparable."""
    root = work_dir / "mlserver"
    model_folder = root / model_name
    model_folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(pathlib.Path(__file__).with_name("onnx_runtime.py"), model_folder / "onnx_runtime.py")
    grpc_port = free_port()
    (root / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "http_port": free_port(), "grpc_port": grpc_port,
        "metrics_port": free_port(), "parallel_workers": 1,
    }))
    (model_folder / "model-settings.json").write_text(json.dumps({
        "name": model_name, "implementation": "onnx_runtime.OnnxModel",
        "max_batch_size": max_batch_size, "max_batch_time": max_batch_time_s,
        "parameters": {"uri": str(onnx_path.resolve())},
    }))
    log_path = work_dir / "mlserver.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(model_folder)}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([str(VENV / "bin" / "mlserver"), "start", str(root)], cwd=root, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    server = Server("mlserver", process, f"127.0.0.1:{grpc_port}", log_path)
    try:
        server.wait_ready(v2_model_ready(model_name), started)
    except Exception:
        server.stop()
        raise
    return server
