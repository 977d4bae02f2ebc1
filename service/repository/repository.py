"""The model repository: `<model_dir>/<model>/<version>/`, verified and loaded into onnxruntime.

Each model's newest version (highest number) is loaded unless a version is pinned. A version that
fails any step (manifest, checksums, session creation, tokenizer) is refused with one clear log line
and recorded as a failure; the other models still load.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass, field

import onnxruntime as ort
from tokenizers import Tokenizer

from service.repository.manifest import Manifest, read_manifest, verify_checksums
from service.runtime.onnx_session import create_session


class ModelNotFoundError(LookupError):
    """No loaded model answers to that name (or task)."""


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    session: ort.InferenceSession
    tokenizer: Tokenizer | None
    # Every graph of a multi-graph model by file name (translation: encoder + decoder step), including
    # the main one; `session` stays the main graph (onnx.file) for V2 and the single-graph tasks.
    sessions: dict[str, ort.InferenceSession] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def task(self) -> str:
        return self.manifest.task


@dataclass(frozen=True)
class LoadFailure:
    model: str
    version: str
    reason: str
    unix_time: float = field(default_factory=time.time)


@dataclass
class ModelRepository:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)
    # Set by the model config; beats the manifest's default_for_task (True: default, False: never).
    default_overrides: dict[str, bool] = field(default_factory=dict)
    loaded_at: dict[str, float] = field(default_factory=dict)  # model name -> unix time it began serving

    def get(self, task: str, name: str = "") -> LoadedModel:
        """The named model, or the task's default when name is empty; it must serve that task."""
        if not name:
            name = self.default_name(task)
        model = self.models.get(name)
        if model is None or model.task != task:
            available = ", ".join(sorted(m.name for m in self.models.values() if m.task == task)) or "none"
            raise ModelNotFoundError(f"model {name!r} is not loaded for task {task!r} (loaded: {available})")
        return model

    def default_name(self, task: str) -> str:
        candidates = sorted(
            (not self.default_overrides.get(m.name, bool(m.manifest.data.get("default_for_task", False))), m.name)
            for m in list(self.models.values())
            if m.task == task
        )
        if not candidates:
            raise ModelNotFoundError(f"no model is loaded for task {task!r}")
        return candidates[0][1]

    def by_task(self, task: str = "") -> list[LoadedModel]:
        return [m for _, m in sorted(self.models.items()) if not task or m.task == task]

    def failures_of(self, name: str) -> list[LoadFailure]:
        return [f for f in self.failures if f.model == name]

    def record_failure(self, failure: LoadFailure, keep: int = 50) -> None:
        # Bounded: a poller retrying a broken version for weeks must not grow memory.
        self.failures.append(failure)
        del self.failures[:-keep]


def version_dirs(model_root: pathlib.Path) -> list[pathlib.Path]:
    """Numeric version folders of one model, oldest first."""
    return sorted(
        (p for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )


def choose_version(model_root: pathlib.Path, pinned: str = "") -> pathlib.Path | None:
    """The version policy: the pinned version if one is configured, else the newest."""
    versions = version_dirs(model_root)
    if pinned:
        versions = [v for v in versions if v.name == pinned]
    return versions[-1] if versions else None


def load_version(
    version_dir: pathlib.Path, intra_op_threads: int = 1, allow_spinning: bool = False
) -> LoadedModel:
    manifest = read_manifest(version_dir)
    verify_checksums(manifest)
    onnx_file = manifest.data["onnx"].get("file", "model.onnx")
    session = create_session(
        manifest.path(onnx_file), intra_op_threads=intra_op_threads, allow_spinning=allow_spinning
    )
    sessions = {onnx_file: session}
    # Further graphs: those the manifest lists, and a translation model's encoder/decoder-step pair.
    decoding = manifest.data.get("decoding") or {}
    graph_files = [*manifest.data["onnx"].get("graphs", {}),
                   *(decoding[key] for key in ("encoder", "decoder") if key in decoding)]
    for graph_file in graph_files:
        if graph_file not in sessions:
            sessions[graph_file] = create_session(
                manifest.path(graph_file), intra_op_threads=intra_op_threads, allow_spinning=allow_spinning
            )
    tokenizer_file = manifest.data.get("tokenizer")
    tokenizer = Tokenizer.from_file(str(manifest.path(tokenizer_file))) if tokenizer_file else None
    return LoadedModel(manifest=manifest, session=session, tokenizer=tokenizer, sessions=sessions)
