"""onnxruntime sessions, created once at start-up with an explicit thread budget.

With 2 cores and several models, oversubscribed threads were measured up to 10x slower here, so the
thread counts are always explicit, and spinning is off by default (a spinning pool burns a core that
another model or the gRPC event loop needs).
"""

from __future__ import annotations

import pathlib

import onnxruntime as ort


def create_session(
    model_path: pathlib.Path,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    allow_spinning: bool = False,
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, intra_op_threads)
    options.inter_op_num_threads = max(1, inter_op_threads)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if allow_spinning else "0")
    options.log_severity_level = 3  # warnings from graph optimisers are noise at serving time
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
