"""Thread budget from affinity and cgroup quota; the per-model JSON config."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from service.config import Settings
from service.model.model_config import BatchConfig, ModelConfigError, load_model_config
from service.runtime.threads import affinity_cpus, cgroup_cpu_quota, thread_budget


def test_a_cgroup_v2_quota_caps_the_threads(tmp_path: pathlib.Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    budget = thread_budget(0, concurrent_batches=1, root=tmp_path)
    assert budget.total == 1 and "quota 1.5" in budget.source
    assert not budget.allow_spinning


def test_no_quota_means_the_affinity(tmp_path: pathlib.Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert thread_budget(0, concurrent_batches=1, root=tmp_path).total == affinity_cpus()


def test_a_cgroup_v1_quota_is_read(tmp_path: pathlib.Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu/cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu/cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 4.0


def test_the_override_wins_and_is_shared_by_the_concurrent_batches(tmp_path: pathlib.Path) -> None:
    budget = thread_budget(8, concurrent_batches=2, root=tmp_path)
    assert (budget.total, budget.per_session, budget.source) == (8, 4, "--threads")
    assert thread_budget(1, concurrent_batches=4, root=tmp_path).per_session == 1


def test_model_config_pins_and_batching(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "models.json"
    models = {"a": {"version": "3", "max_batch_size": 4, "queue_delay_policy": "fixed"},
              "b": {"default_for_task": True}}
    path.write_text(json.dumps({"models": models}))
    config = load_model_config(path, BatchConfig(max_queue_delay_ms=7.0))
    assert config.pins() == {"a": "3"}
    assert config.for_model("a").batching == BatchConfig(
        max_batch_size=4, max_queue_delay_ms=7.0, queue_delay_policy="fixed")
    assert config.for_model("b").default_for_task is True
    assert config.for_model("unnamed").batching == BatchConfig(max_queue_delay_ms=7.0)


@pytest.mark.parametrize(
    "models", [{"a": {"verison": "1"}}, {"a": {"version": "latest"}}, {"a": {"max_batch_size": 0}},
               {"a": {"queue_delay_policy": "eager"}}, {"a": {"decode_scheduling": "rows"}}]
)
def test_a_bad_model_config_is_refused(tmp_path: pathlib.Path, models: dict) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models}))
    with pytest.raises(ModelConfigError):
        load_model_config(path, BatchConfig())


@pytest.mark.parametrize("field", dataclasses.fields(BatchConfig), ids=lambda field: field.name)
def test_every_batching_setting_is_a_server_flag_and_can_be_set_per_model(
        tmp_path: pathlib.Path, field: dataclasses.Field) -> None:
    # Derived from the dataclass: a new batching field without its server setting (same name and
    # default), or that the model config cannot set, fails here.
    settings = {f.name: f for f in dataclasses.fields(Settings)}
    assert field.name in settings, f"BatchConfig.{field.name} has no server setting of that name"
    assert settings[field.name].default == field.default
    chosen = {"queue_delay_policy": "fixed", "decode_scheduling": "batch"}.get(field.name, field.default * 2)
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": {"a": {field.name: chosen}}}))
    config = load_model_config(path, BatchConfig())
    assert config.for_model("a").batching == dataclasses.replace(BatchConfig(), **{field.name: chosen})
    assert config.for_model("b").batching == BatchConfig()


def test_the_server_hands_every_batching_setting_to_the_model_config() -> None:
    # Every BatchConfig field, set to a value other than its default, reaches the server-wide batch settings.
    changed = {"max_batch_size": 7, "max_queue_delay_ms": 1.5, "queue_delay_policy": "fixed",
               "max_queue_texts": 99, "batch_token_budget": 123, "items_per_run": 2, "inline_max_ms": 0.5,
               "decode_scheduling": "batch"}
    assert set(changed) == {f.name for f in dataclasses.fields(BatchConfig)}, "give the new field a value here"
    assert Settings(**changed).batch_config() == BatchConfig(**changed)
