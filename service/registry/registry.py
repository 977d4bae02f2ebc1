"""The live set: the loaded models by name, the versions refused, the task defaults.

Discovery on disk is service/registry/repository.py; the lifecycle that fills this set (load, swap,
unload, poll) is service/registry/manager.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from service.model.loaded_model import LoadedModel


class ModelNotFoundError(LookupError):
    """No loaded model answers to that name (or task)."""


@dataclass(frozen=True)
class LoadFailure:
    model: str
    version: str
    reason: str
    unix_time: float = field(default_factory=time.time)


@dataclass
class ModelRegistry:
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
            (not self.default_overrides.get(m.name, m.manifest.spec.default_for_task), m.name)
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
