"""The manifest is a published contract: every committed manifest validates against the committed JSON
Schema, the schema is the one the types generate, and a manifest of another format, with a missing,
unknown or ill-typed field, is refused at load with a message naming the file and the field."""

from __future__ import annotations

import copy
import json
import pathlib
import shutil
from typing import Any

import jsonschema
import pytest

from service.model.manifest import ManifestError, read_manifest
from service.model.manifest_schema import json_schema

REPO = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = REPO / "docs" / "manifest.schema.json"
COMMITTED = sorted((REPO / "exported").glob("*/*/manifest.json"))


def test_the_committed_schema_is_the_one_the_types_generate() -> None:
    committed = json.loads(SCHEMA.read_text("utf-8"))
    assert committed == json_schema(), "regenerate: python -m service.model.manifest_schema > docs/manifest.schema.json"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_every_committed_manifest_validates_against_the_schema(path: pathlib.Path) -> None:
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text("utf-8"))).validate(json.loads(path.read_text()))
    assert read_manifest(path.parent).spec.name == path.parent.parent.name


def test_there_is_a_committed_manifest_of_every_task() -> None:
    tasks = {json.loads(p.read_text())["task"] for p in COMMITTED}
    assert tasks == {"sentiment", "translation", "ner", "recommendation", "document"}


@pytest.fixture
def translation_manifest(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, Any]]:
    source = REPO / "exported" / "transformer"
    version = max((p for p in source.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    folder = tmp_path / "transformer" / version.name
    folder.mkdir(parents=True)
    shutil.copy(version / "manifest.json", folder / "manifest.json")
    return folder, json.loads((folder / "manifest.json").read_text())


def refusal(folder: pathlib.Path, data: dict[str, Any]) -> str:
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError) as error:
        read_manifest(folder)
    message = str(error.value)
    assert str(folder / "manifest.json") in message  # the file, always
    return message


def test_an_unknown_format_version_is_refused(translation_manifest: tuple[pathlib.Path, dict[str, Any]]) -> None:
    folder, data = translation_manifest
    message = refusal(folder, {**data, "format_version": 2})
    assert "format_version 2 is not one this server reads (it reads 1)" in message
    del data["format_version"]
    assert "field format_version is missing" in refusal(folder, data)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.pop("task"), "field task: Field required"),
    (lambda d: d.update(task="summarisation"), "field task: Input should be 'sentiment'"),
    (lambda d: d["decoding"].update(max_source_tokens="many"), "field decoding.max_source_tokens: Input should be"),
    (lambda d: d["decoding"].update(max_sorce_tokens=100), "field decoding.max_sorce_tokens: unknown field"),
    (lambda d: d["onnx"]["inputs"][0].pop("dtype"), "field onnx.inputs.0.dtype: Field required"),
    (lambda d: d["files"].update({"encoder.onnx": "not a sha256"}), "field files.encoder.onnx: String should match"),
    (lambda d: d.pop("decoding"), "a translation model needs decoding"),
    (lambda d: d["decoding"]["defaults"].update(beam_size=0), "field decoding.defaults.beam_size: Input should be"),
])
def test_a_bad_field_is_refused_naming_it(translation_manifest: tuple[pathlib.Path, dict[str, Any]],
                                          change: Any, expected: str) -> None:
    folder, data = translation_manifest
    changed = copy.deepcopy(data)
    change(changed)
    assert expected in refusal(folder, changed)


def test_records_may_carry_any_provenance(translation_manifest: tuple[pathlib.Path, dict[str, Any]]) -> None:
    folder, data = translation_manifest
    (folder / "manifest.json").write_text(json.dumps({**data, "made_by": {"team": "search", "run": 7}}))
    assert read_manifest(folder).data["made_by"] == {"team": "search", "run": 7}


def test_the_committed_field_reference_is_the_one_the_types_generate() -> None:
    from service.model.manifest_docs import markdown

    assert (REPO / "docs" / "manifest.md").read_text("utf-8") == markdown(), \
        "regenerate: python -m service.model.manifest_docs > docs/manifest.md"


def test_new_test_metrics_keep_the_challenge_figures_measured_apart(
        translation_manifest: tuple[pathlib.Path, dict[str, Any]]) -> None:
    from service.model.manifest import with_metrics

    folder, data = translation_manifest
    (folder / "manifest.json").write_text(json.dumps({**data, "files": {}, "metrics": {
        "bleu": 1.0, "challenge": {"f1": 0.5}}}))
    republished = with_metrics(folder, {"bleu": 2.0})
    assert republished.metrics == {"bleu": 2.0, "challenge": {"f1": 0.5}}
    assert with_metrics(folder, {"bleu": 3.0, "challenge": {"f1": 0.7}}).metrics["challenge"] == {"f1": 0.7}
