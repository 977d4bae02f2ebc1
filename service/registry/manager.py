"""The live set of served models: loads, hot swaps, unloads, and the repository poller.

Loading (checksums, onnxruntime session, warm-up) runs in a thread of its own so serving goes on;
the swap itself happens in the event loop, as two reference assignments that a call either sees
before or after, never half-way. A call that already took the old pipeline finishes on it.

A version that fails is remembered with the state of its files, so the poller does not retry it
every interval, but does retry as soon as any of its files changes (e.g. a copy finished).

A serving version whose folder is deleted keeps serving: its sessions are in memory, and a server
that stopped answering because someone removed files would turn a mistake into an outage. The poll
logs one WARNING naming the folder, Admin.ListVersions still lists the version as SERVING with the
reason, and the version policy moves on as soon as another version is on disk (an older one left
behind, or a new one published), as it does for any new version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from service.batching.batcher import DynamicBatcher
from service.batching.runs import items_per_run_for
from service.metrics.registry import ServingMetrics
from service.model.loaded_model import LoadedModel
from service.model.model_config import BatchConfig, ModelConfig
from service.model.pipeline import AnyPipeline
from service.model.version_policy import choose_version, version_dirs
from service.registry.loader import LoadError, ServableVersion, prepare_version
from service.registry.registry import LoadFailure, ModelRegistry
from service.registry.repository import Signature, files_signature, model_names
from service.runtime.threads import ThreadBudget

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class VersionState:
    name: str
    version: str
    state: str   # SERVING, AVAILABLE, FAILED, UNLOADED
    reason: str = ""


class ModelManager:
    def __init__(
        self,
        model_dir: pathlib.Path,
        config: ModelConfig,
        budget: ThreadBudget,
        metrics: ServingMetrics,
        inference_executor: Executor,
    ) -> None:
        self.model_dir = model_dir
        self.config = config
        self.budget = budget
        self.metrics = metrics
        self.registry = ModelRegistry(default_overrides={
            name: s.default_for_task for name, s in config.models.items() if s.default_for_task is not None
        })
        self.batchers: dict[str, DynamicBatcher[Any, Any]] = {}
        # V2 ModelInfer's batchers, one per (model, graph file): raw tensors batch apart from task calls.
        self.graph_batchers: dict[tuple[str, str], DynamicBatcher[Any, Any]] = {}
        self._inference_executor = inference_executor
        # One loader thread: loads queue behind each other instead of competing with inference for cores.
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._lock = asyncio.Lock()
        self._pins = config.pins()        # runtime pins; an admin LoadModel changes them
        self._unloaded: set[str] = set()  # unloaded by an admin: the poller leaves them alone
        self._failed: dict[tuple[str, str], tuple[Signature, str]] = {}
        self._folder_gone: set[tuple[str, str]] = set()  # serving versions whose folder was deleted (warned)

    # ---- lookups (event loop) ------------------------------------------------------------------
    def model_names_on_disk(self) -> list[str]:
        return model_names(self.model_dir)

    def batcher(self, name: str) -> DynamicBatcher[Any, Any] | None:
        return self.batchers.get(name)

    def batch_settings(self, model: LoadedModel) -> BatchConfig:
        """The version's batch settings: the model config's, with items_per_run from the manifest unless
        the config sets it (1 for a dynamically quantized graph: batch-mates must not change an answer)."""
        batching = self.config.for_model(model.name).batching
        return replace(batching, items_per_run=items_per_run_for(model, batching.items_per_run))

    def graph_batcher(
        self, model: LoadedModel, graph: str, pipeline: Callable[[], AnyPipeline]
    ) -> DynamicBatcher[Any, Any]:
        """The batcher of one graph of a loaded model for raw-tensor calls, made on first use.

        `pipeline` builds the graph's pipeline; it is called again when a new version of the model
        has been swapped in since, so later batches run on the new version (as the task batchers do).
        """
        key = (model.name, graph)
        batcher = self.graph_batchers.get(key)
        if batcher is None:
            batcher = DynamicBatcher(pipeline(), self.batch_settings(model),
                                     self._inference_executor, self.metrics, label=f"{model.name}:{graph}")
            batcher.start()
            self.graph_batchers[key] = batcher
        elif batcher.pipeline.model is not model:
            batcher.pipeline, batcher.config = pipeline(), self.batch_settings(model)
        return batcher

    @property
    def inference_executor(self) -> Executor:
        """The pool batches run in; streaming calls (which cannot be batched) step in it too."""
        return self._inference_executor

    # ---- loading -------------------------------------------------------------------------------
    async def sync(self) -> None:
        """Bring every model in the directory to its policy's version (one poll)."""
        on_disk = self.model_names_on_disk()
        self._notice_deleted_folders()
        for name in on_disk:
            if name in self._unloaded:
                continue
            chosen = choose_version(self.model_dir / name, self._pins.get(name, ""))
            if chosen is None:
                if name not in self.registry.models:  # a serving one was warned about just above
                    log.warning("model %s: no version folder to load in %s", name, self.model_dir / name)
                continue
            serving = self.registry.models.get(name)
            if serving is not None and serving.version == chosen.name:
                continue
            known = self._failed.get((name, chosen.name))
            if known is not None and known[0] == files_signature(chosen):
                continue  # failed before, unchanged since: do not retry (nor log) every poll
            try:
                await self._load(name, chosen)
            except LoadError:
                # Logged, counted and recorded by _load. A serving version keeps serving; a model with
                # none yet (start-up) falls back to its newest older version that loads, unless pinned.
                if serving is None and not self._pins.get(name):
                    await self._load_older(name, chosen)

    @staticmethod
    def version_folder_gone(model: LoadedModel) -> bool:
        """Whether the folder the model was loaded from no longer exists (it serves from memory)."""
        return not model.manifest.directory.is_dir()

    def _notice_deleted_folders(self) -> None:
        """Warn once per serving version whose folder has disappeared (and note when it comes back)."""
        serving = dict(sorted(self.registry.models.items()))
        self._folder_gone &= {(name, model.version) for name, model in serving.items()}  # gone: replaced
        for name, model in serving.items():
            key, folder = (name, model.version), model.manifest.directory
            if not self.version_folder_gone(model):
                if key in self._folder_gone:
                    self._folder_gone.discard(key)
                    log.info("model %s version %s: its folder %s is back", name, model.version, folder)
            elif key not in self._folder_gone:
                self._folder_gone.add(key)
                log.warning("model %s version %s: its folder %s was deleted; still serving it from memory "
                            "until another version is available", name, model.version, folder)

    async def _load_older(self, name: str, failed: pathlib.Path) -> None:
        for older in reversed([v for v in version_dirs(self.model_dir / name) if int(v.name) < int(failed.name)]):
            known = self._failed.get((name, older.name))
            if known is not None and known[0] == files_signature(older):
                continue
            with contextlib.suppress(LoadError):
                await self._load(name, older)
                return

    async def load(self, name: str, version: str = "") -> LoadedModel:
        """Admin load: a version pins it, "" lifts the pin and takes the policy's choice."""
        if name not in self.model_names_on_disk():
            raise LookupError(f"model {name!r} is not in the repository")
        if version:
            self._pins[name] = version
        else:
            self._pins.pop(name, None)
            if self.config.for_model(name).version:
                self._pins[name] = self.config.for_model(name).version
        self._unloaded.discard(name)
        chosen = choose_version(self.model_dir / name, self._pins.get(name, ""))
        if chosen is None:
            raise LookupError(f"model {name!r} has no version {version or '(any)'} in the repository")
        serving = self.registry.models.get(name)
        if serving is not None and serving.version == chosen.name:
            return serving
        return await self._load(name, chosen)

    async def _load(self, name: str, version_dir: pathlib.Path) -> LoadedModel:
        async with self._lock:
            signature = files_signature(version_dir)
            loop = asyncio.get_running_loop()
            log.info("loading model %s version %s", name, version_dir.name)
            try:
                prepared = await loop.run_in_executor(
                    self._loader, prepare_version, version_dir, self.budget.per_session, self.budget.allow_spinning
                )
            except LoadError as exc:
                reason = self._without_paths(str(exc))
                log.error("refusing model %s version %s: %s", name, version_dir.name, reason)
                self.metrics.record_load_failure(name)
                self.metrics.loads.labels(name, "failed").inc()
                self.registry.record_failure(LoadFailure(name, version_dir.name, reason))
                self._failed[(name, version_dir.name)] = (signature, reason)
                raise LoadError(reason) from None
            self._swap_in(prepared)
            self._failed.pop((name, version_dir.name), None)
            return prepared.model

    def _swap_in(self, prepared: ServableVersion) -> None:
        model = prepared.model
        old = self.registry.models.get(model.name)
        if prepared.pipeline is not None:
            batcher = self.batchers.get(model.name)
            if batcher is None:
                batcher = DynamicBatcher(
                    prepared.pipeline, self.batch_settings(model), self._inference_executor, self.metrics,
                )
                batcher.start()
                self.batchers[model.name] = batcher
            else:  # both in one step: a batch reads the pipeline and its limit together
                batcher.pipeline, batcher.config = prepared.pipeline, self.batch_settings(model)
        self.registry.models[model.name] = model
        self.registry.loaded_at[model.name] = time.time()
        self.metrics.loads.labels(model.name, "loaded").inc()
        self.metrics.load_duration.labels(model.name).observe(prepared.load_seconds)
        if old is not None:
            self.metrics.record_unloaded_model(old)
        self.metrics.record_loaded_model(model)
        if old is None:
            log.info("loaded model %s version %s (task %s) in %.2f s",
                     model.name, model.version, model.task, prepared.load_seconds)
        else:
            log.info("swapped model %s version %s -> %s in %.2f s; calls in flight finish on %s",
                     model.name, old.version, model.version, prepared.load_seconds, old.version)

    async def unload(self, name: str) -> LoadedModel:
        async with self._lock:
            model = self.registry.models.pop(name, None)
            if model is None:
                raise LookupError(f"model {name!r} is not loaded")
            self._unloaded.add(name)
            self.registry.loaded_at.pop(name, None)
            self.metrics.record_unloaded_model(model)
            batcher = self.batchers.pop(name, None)
            graph_batchers = [self.graph_batchers.pop(key) for key in list(self.graph_batchers) if key[0] == name]
        for closing in [batcher, *graph_batchers]:
            if closing is not None:
                await closing.close()  # queued calls still run
        log.info("unloaded model %s version %s", name, model.version)
        return model

    def list_versions(self, name: str = "") -> list[VersionState]:
        """Every version on disk, and a serving version whose folder was deleted (SERVING, with why)."""
        names = [name] if name else sorted({*self.model_names_on_disk(), *self.registry.models})
        states = []
        for model_name in names:
            root = self.model_dir / model_name
            serving = self.registry.models.get(model_name)
            if not root.is_dir() and serving is None:
                raise LookupError(f"model {model_name!r} is not in the repository")
            on_disk = version_dirs(root) if root.is_dir() else []
            if serving is not None and self.version_folder_gone(serving):
                reason = (f"folder {model_name}/{serving.manifest.directory.name} was deleted from the repository; "
                          "serving from memory until another version is available")
                states.append(VersionState(model_name, serving.version, "SERVING", reason))
            for version_dir in on_disk:
                failed = self._failed.get((model_name, version_dir.name))
                if serving is not None and serving.version == version_dir.name:
                    state = VersionState(model_name, version_dir.name, "SERVING")
                elif failed is not None:
                    state = VersionState(model_name, version_dir.name, "FAILED", failed[1])
                elif model_name in self._unloaded:
                    state = VersionState(model_name, version_dir.name, "UNLOADED")
                else:
                    state = VersionState(model_name, version_dir.name, "AVAILABLE")
                states.append(state)
        return sorted(states, key=lambda state: (state.name, int(state.version) if state.version.isdigit() else -1))

    async def poll_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except FileNotFoundError as exc:
                log.error("repository poll: %s", exc)  # a vanished mount: keep serving what is loaded
            except Exception:
                log.exception("repository poll failed; serving goes on with the loaded versions")

    async def close(self) -> None:
        for batcher in [*self.batchers.values(), *self.graph_batchers.values()]:
            await batcher.close()
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _without_paths(self, reason: str) -> str:
        # Reasons reach clients (Models, Admin); server paths must not. Keep them repository-relative.
        for prefix in {str(self.model_dir.resolve()), str(self.model_dir)}:
            reason = reason.replace(prefix + "/", "").replace(prefix, "")
        return reason
