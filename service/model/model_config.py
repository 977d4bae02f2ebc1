"""Per-model settings from the JSON file named by --model-config.

    {"models": {"sentiment-bigru": {"version": "1", "max_batch_size": 16, "max_queue_delay_ms": 2,
                                    "max_queue_texts": 512, "batch_token_budget": 4096},
                "sentiment-bigru-int8": {"default_for_task": true}}}

Every key is optional; a model not named gets the server-wide flags. Unknown keys are an error at
start-up, so a typo cannot silently leave a model unpinned.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field, fields, replace
from typing import Any

QUEUE_DELAY_POLICIES = ("adaptive", "fixed")
DECODE_SCHEDULINGS = ("iteration", "batch")


class ModelConfigError(ValueError):
    """The model config file is unreadable or names an unknown setting."""


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 32
    max_queue_delay_ms: float = 5.0
    max_queue_texts: int = 1024
    batch_token_budget: int = 8192
    # "adaptive": wait (up to max_queue_delay_ms) only for as many texts as the last batch held, so a
    # lone client never waits for company that is not coming; "fixed": always wait the full delay
    # or until max_batch_size texts are queued. See docs/serving.md for the measured difference.
    queue_delay_policy: str = "adaptive"
    # At most this many items (texts, requests, V2 rows) per onnxruntime run. 0: the manifest decides,
    # 1 for a dynamically quantized graph (its activation scales span the whole batch tensor, so
    # batch-mates would change an answer), else no limit. docs/serving.md "One item per run".
    items_per_run: int = 0
    # A lone call (nothing else queued for the model, one call in the batch, not a chunked pipeline) whose
    # run this model's lone runs predict at no more than this many milliseconds runs in the event loop
    # itself instead of an inference thread: the hand-off there and back cost ~0.15 ms of CPU, half a short
    # text's whole model run (docs/serving.md "Per-call cost"). The loop is held that long. 0: never.
    inline_max_ms: float = 0.0  # off by default: docs/serving.md "Per-call cost" (mixed measurements)
    # Translation: "iteration" runs the batches a step at a time, interleaved, each call answered as soon
    # as its own texts are done (service/batching/step_scheduler.py); "batch" runs one batch at a time to
    # its end, light calls between its chunks (as before). docs/serving.md "Iteration-level scheduling".
    decode_scheduling: str = "iteration"


@dataclass(frozen=True)
class ModelSettings:
    version: str = ""            # pinned version; "" follows the policy (newest)
    default_for_task: bool | None = None  # None: the manifest decides
    batching: BatchConfig = field(default_factory=BatchConfig)


@dataclass(frozen=True)
class ModelConfig:
    defaults: BatchConfig = field(default_factory=BatchConfig)
    models: dict[str, ModelSettings] = field(default_factory=dict)

    def for_model(self, name: str) -> ModelSettings:
        return self.models.get(name, ModelSettings(batching=self.defaults))

    def pins(self) -> dict[str, str]:
        return {name: s.version for name, s in self.models.items() if s.version}


_BATCH_KEYS = {f.name for f in fields(BatchConfig)}


def _model_settings(name: str, raw: Any, defaults: BatchConfig) -> ModelSettings:
    if not isinstance(raw, dict):
        raise ModelConfigError(f"models.{name}: must be an object")
    unknown = set(raw) - _BATCH_KEYS - {"version", "default_for_task"}
    if unknown:
        raise ModelConfigError(f"models.{name}: unknown settings {', '.join(sorted(unknown))}")
    batching = replace(defaults, **{k: type(getattr(defaults, k))(raw[k]) for k in _BATCH_KEYS & set(raw)})
    if batching.max_batch_size < 1 or batching.max_queue_texts < 1 or batching.batch_token_budget < 1:
        raise ModelConfigError(f"models.{name}: batch sizes and budgets must be at least 1")
    if batching.items_per_run < 0:
        raise ModelConfigError(f"models.{name}.items_per_run: must not be negative (0: the manifest decides)")
    if batching.max_queue_delay_ms < 0:
        raise ModelConfigError(f"models.{name}: max_queue_delay_ms must not be negative")
    if batching.inline_max_ms < 0:
        raise ModelConfigError(f"models.{name}.inline_max_ms: must not be negative (0: never inline)")
    if batching.queue_delay_policy not in QUEUE_DELAY_POLICIES:
        raise ModelConfigError(
            f"models.{name}.queue_delay_policy: {batching.queue_delay_policy!r} is not one of "
            f"{', '.join(QUEUE_DELAY_POLICIES)}"
        )
    if batching.decode_scheduling not in DECODE_SCHEDULINGS:
        raise ModelConfigError(
            f"models.{name}.decode_scheduling: {batching.decode_scheduling!r} is not one of "
            f"{', '.join(DECODE_SCHEDULINGS)}"
        )
    version = str(raw.get("version", ""))
    if version and not version.isdigit():
        raise ModelConfigError(f"models.{name}.version: {version!r} is not a version number")
    default = raw.get("default_for_task")
    return ModelSettings(version=version, default_for_task=None if default is None else bool(default),
                         batching=batching)


def load_model_config(path: pathlib.Path | None, defaults: BatchConfig) -> ModelConfig:
    if path is None:
        return ModelConfig(defaults=defaults)
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelConfigError(f"model config {path}: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"models"}:
        raise ModelConfigError(f"model config {path}: expected {{\"models\": {{...}}}}")
    models = {name: _model_settings(name, raw, defaults) for name, raw in (data.get("models") or {}).items()}
    return ModelConfig(defaults=defaults, models=models)
