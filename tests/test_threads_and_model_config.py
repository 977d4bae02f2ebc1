"""Thread budget from affinity and cgroup quota; the per-model JSON config."""

from __future__ import annotations

import json
import pathlib

import pytest

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
               {"a": {"queue_delay_policy": "eager"}}]
)
def test_a_bad_model_config_is_refused(tmp_path: pathlib.Path, models: dict) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models}))
    with pytest.raises(ModelConfigError):
        load_model_config(path, BatchConfig())
