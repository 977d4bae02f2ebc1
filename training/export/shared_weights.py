"""Store the weights that several graphs of one version hold in common once, in one external-data file.

    python -m training.export.shared_weights exported/transformer/1

The Transformer ships as two graphs (encoder.onnx, decoder_step.onnx) and both carry the same token
embedding (8000 x 256 fp32, 8.2 MB: the encoder reads source tokens through it, the decoder reads target
tokens and projects onto the vocabulary with it) and the same sinusoid position table (1 MB). Written
inline, every byte of those is committed twice. Here each such initializer (same name, type, shape and
bytes in every graph that has it) moves to `shared_weights.bin`, and every graph refers to it through
ONNX external data (location, offset, length): onnxruntime reads it relative to the graph's folder, so
the served outputs are bit for bit the same. The manifest lists the file, so its sha256 is verified
like every other, and `onnx.external_data` names it so that tools which rewrite the graphs (quantize)
know it is not a file of its own to copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
from collections import defaultdict
from typing import Any

import onnx
from onnx import external_data_helper

from service.model.manifest import read_manifest, republish_manifest

SHARED_FILE = "shared_weights.bin"
MIN_BYTES = 1024  # as onnx's own external-data threshold: smaller tensors are not worth an indirection
ALIGNMENT = 4096  # offsets on page boundaries, so the file can be memory-mapped tensor by tensor


def _key(tensor: onnx.TensorProto) -> tuple[str, int, tuple[int, ...], str]:
    return tensor.name, tensor.data_type, tuple(tensor.dims), hashlib.sha256(tensor.raw_data).hexdigest()


def share_initializers(version_dir: pathlib.Path, graph_files: list[str]) -> dict[str, Any]:
    """Rewrite `graph_files` in `version_dir` so the initializers they have in common live once in
    SHARED_FILE. Returns what was shared (tensor names, bytes stored once, bytes saved); an empty
    "tensors" list (and no file) when the graphs have nothing in common."""
    graphs = {name: onnx.load(str(version_dir / name)) for name in graph_files}
    holders: dict[tuple[str, int, tuple[int, ...], str], list[str]] = defaultdict(list)
    data_of: dict[tuple[str, int, tuple[int, ...], str], bytes] = {}
    for file_name, graph in graphs.items():
        for tensor in graph.graph.initializer:
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= MIN_BYTES:
                key = _key(tensor)
                holders[key].append(file_name)
                data_of[key] = tensor.raw_data
    shared = sorted(key for key, files in holders.items() if len(files) > 1)
    if not shared:
        return {"file": None, "tensors": [], "bytes": 0, "bytes_saved": 0}

    placements: dict[tuple[str, int, tuple[int, ...], str], tuple[int, int]] = {}
    saved = 0
    with (version_dir / SHARED_FILE).open("wb") as out:
        for key in shared:
            padding = -out.tell() % ALIGNMENT
            out.write(b"\0" * padding)
            offset = out.tell()
            data = data_of[key]
            out.write(data)
            placements[key] = (offset, len(data))
            saved += len(data) * (len(holders[key]) - 1)
        total = out.tell()
    for file_name, graph in graphs.items():
        for tensor in graph.graph.initializer:
            if tensor.HasField("raw_data") and _key(tensor) in placements:
                offset, length = placements[_key(tensor)]
                external_data_helper.set_external_data(tensor, SHARED_FILE, offset, length)
                tensor.ClearField("raw_data")
        onnx.save_model(graph, str(version_dir / file_name))
        onnx.checker.check_model(str(version_dir / file_name))  # resolves the external data too
    return {"file": SHARED_FILE, "tensors": [key[0] for key in shared], "bytes": total, "bytes_saved": saved}


def graph_bytes(version_dir: pathlib.Path, manifest: dict[str, Any]) -> int:
    """A multi-graph version's model size: its graphs plus the weights they share in SHARED_FILE."""
    shared = (manifest["onnx"].get("external_data") or {}).get("file")
    names = [*manifest["onnx"].get("graphs", {}), *([shared] if shared else [])]
    return sum((version_dir / name).stat().st_size for name in names)


def repackage_version(version_dir: pathlib.Path) -> dict[str, Any]:
    """Share the common weights of a committed multi-graph version in place and rewrite its manifest's
    checksums; the manifest records the packaging (`onnx.external_data`)."""
    manifest = read_manifest(version_dir)
    section = manifest.data["onnx"]
    graph_files = sorted(section.get("graphs") or [section["file"]])
    if section.get("external_data"):
        raise SystemExit(f"{version_dir} already stores shared weights in {section['external_data']['file']}")
    report = share_initializers(version_dir, graph_files)
    if report["file"] is None:
        raise SystemExit(f"{version_dir}: its graphs have no initializer in common")
    # What the graphs' checksums were before (variants made from them, e.g. int8, record those).
    report["repackaged_from_sha256"] = {name: manifest.files[name] for name in graph_files}
    republish_manifest(version_dir, {"onnx": {**section, "external_data": report}}, source=manifest)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    args = parser.parse_args()
    print(json.dumps(repackage_version(args.version_dir), indent=1))


if __name__ == "__main__":
    main()
