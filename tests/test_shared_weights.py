"""Weights two graphs of a version hold in common are stored once (training/export/shared_weights.py):
the committed translation models carry no tensor twice, a repackaged version decodes bit for bit as
before, the shared file is checksummed like every other, and the int8 quantizer does not drag it along."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import onnx
import pytest
from exported_models import EXPORTED

from service.model.manifest import ManifestError, read_manifest, republish_manifest, sha256_file
from service.pipelines.seq2seq_runtime import StepRunner
from service.runtime.version_loader import load_version
from training.export.quantize import quantize
from training.export.shared_weights import SHARED_FILE, graph_bytes, repackage_version


def inline_copy(version_dir: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """The version with every graph holding all its weights inline (how versions were written before)."""
    manifest = read_manifest(version_dir)
    out_dir.mkdir(parents=True)
    shutil.copy(version_dir / "tokenizer.json", out_dir / "tokenizer.json")
    for name in manifest.data["onnx"]["graphs"]:
        onnx.save_model(onnx.load(str(version_dir / name)), str(out_dir / name))  # external data read in
    onnx_section = {k: v for k, v in manifest.data["onnx"].items() if k != "external_data"}
    republish_manifest(out_dir, {"onnx": onnx_section}, source=manifest)
    return out_dir


def initializer_bytes(version_dir: pathlib.Path) -> dict[str, dict[str, bytes]]:
    """{graph file: {initializer name: inline bytes}} (tensors kept in external data are left out)."""
    graphs = read_manifest(version_dir).data["onnx"].get("graphs") or {}
    found = {}
    for name in graphs:
        graph = onnx.load(str(version_dir / name), load_external_data=False).graph
        found[name] = {t.name: t.raw_data for t in graph.initializer if t.HasField("raw_data")}
    return found


def greedy_trace(version_dir: pathlib.Path, steps: int = 6) -> list[np.ndarray]:
    """Encoder outputs then the decoder's log-probs over a few greedy steps for a fixed batch."""
    runner = StepRunner(load_version(version_dir))
    src = np.array([[5, 6, 7, 8, runner.eos_id], [9, 10, runner.eos_id, 0, 0]], dtype=np.int64)
    state = runner.encode(src, (src > 0).astype(np.int64))
    trace, tokens = [], np.array([runner.bos_id, runner.bos_id])
    for _ in range(steps):
        log_probs, _, state = runner.step(tokens, state)
        trace.append(log_probs)
        tokens = log_probs.argmax(axis=-1)
    return trace


def test_a_fresh_export_stores_the_shared_embedding_once(tiny_translation_models: pathlib.Path) -> None:
    version_dir = tiny_translation_models / "transformer" / "1"
    manifest = read_manifest(version_dir)
    shared = manifest.data["onnx"]["external_data"]
    assert shared["file"] == SHARED_FILE and SHARED_FILE in manifest.files
    assert "model.embedding.weight" in shared["tensors"]
    inline = initializer_bytes(version_dir)
    assert all("model.embedding.weight" not in tensors for tensors in inline.values())
    assert (version_dir / SHARED_FILE).stat().st_size == shared["bytes"]


def test_repackaging_keeps_every_output_bit_for_bit(tiny_translation_models: pathlib.Path,
                                                    tmp_path: pathlib.Path) -> None:
    before = inline_copy(tiny_translation_models / "transformer" / "1", tmp_path / "models" / "transformer" / "1")
    before_sizes = sum(p.stat().st_size for p in before.iterdir())
    expected = greedy_trace(before)
    after = tmp_path / "after" / "transformer" / "1"
    shutil.copytree(before, after)
    old_sha = read_manifest(after).files

    report = repackage_version(after)

    assert report["bytes_saved"] > 0 and report["tensors"]
    assert report["repackaged_from_sha256"] == {g: old_sha[g] for g in ("decoder_step.onnx", "encoder.onnx")}
    assert sum(p.stat().st_size for p in after.iterdir()) < before_sizes
    for want, got in zip(expected, greedy_trace(after), strict=True):
        assert np.array_equal(want, got)
    with pytest.raises(SystemExit, match="already stores shared weights"):
        repackage_version(after)


def test_a_changed_shared_file_is_refused_at_load(tiny_translation_models: pathlib.Path,
                                                  tmp_path: pathlib.Path) -> None:
    copy = tmp_path / "transformer" / "1"
    shutil.copytree(tiny_translation_models / "transformer" / "1", copy)
    data = bytearray((copy / SHARED_FILE).read_bytes())
    data[100] ^= 0xFF
    (copy / SHARED_FILE).write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=f"{SHARED_FILE}: sha256"):
        load_version(copy)


def test_an_int8_variant_shares_its_own_weights_not_the_fp32_file(tiny_translation_models: pathlib.Path,
                                                                   tmp_path: pathlib.Path) -> None:
    source = tiny_translation_models / "transformer" / "1"
    out = tmp_path / "transformer-int8" / "1"
    report = quantize(source, out)
    shared = report["external_data"]
    assert "model.embedding.weight_quantized" in shared["tensors"]
    assert (out / SHARED_FILE).read_bytes() != (source / SHARED_FILE).read_bytes()
    for name in ("encoder.onnx", "decoder_step.onnx"):
        onnx.checker.check_model(str(out / name))  # every external reference resolves inside the variant
        # the fp32 graph's size counts the weights it shares, so the two sizes compare like for like
        assert report["graphs"][name]["bytes"]["fp32"] > (source / name).stat().st_size


def committed_multi_graph_versions() -> list[pathlib.Path]:
    return sorted(p.parent for p in EXPORTED.glob("*/*/manifest.json")
                  if len(json.loads(p.read_text())["onnx"].get("graphs") or {}) > 1)


@pytest.mark.parametrize("version_dir", committed_multi_graph_versions(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_committed_version_carries_a_weight_twice(version_dir: pathlib.Path) -> None:
    # Every byte in exported/ is committed and kept in git history (the folder has a ~120 MB budget).
    inline = initializer_bytes(version_dir)
    seen: dict[tuple[str, bytes], str] = {}
    for graph, tensors in inline.items():
        for name, data in tensors.items():
            if len(data) >= 1024:
                assert (name, data) not in seen, f"{name} is stored in both {seen[(name, data)]} and {graph}"
                seen[(name, data)] = graph
    manifest = read_manifest(version_dir)
    shared = manifest.data["onnx"].get("external_data")
    if shared:
        assert sha256_file(version_dir / shared["file"]) == manifest.files[shared["file"]]


def test_a_models_size_counts_the_weights_its_graphs_share(tiny_translation_models: pathlib.Path) -> None:
    version_dir = tiny_translation_models / "transformer" / "1"
    files = ("encoder.onnx", "decoder_step.onnx", SHARED_FILE)
    assert graph_bytes(version_dir, read_manifest(version_dir).data) == sum(
        (version_dir / name).stat().st_size for name in files)
