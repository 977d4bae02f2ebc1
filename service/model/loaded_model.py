"""A model version opened for serving: its manifest, its onnxruntime sessions and its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnxruntime as ort
from tokenizers import Tokenizer

from service.model.manifest import Manifest


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
