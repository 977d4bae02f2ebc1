"""Dynamic int8 variant of an exported model, published as a model of its own with measured quality.

    python -m training.export.quantize exported/sentiment-bigru/1 --out exported/sentiment-bigru-int8/1

quant_pre_process runs first (shape inference and graph cleanup): on dynamo-exported graphs weights can
arrive through Concat/Identity nodes, and quantize_dynamic silently leaves such weights fp32. Then
quantize_dynamic (int8 weights, activations quantized at run time). onnxruntime has no quantized GRU or
LSTM kernel, so recurrent weights stay fp32 whatever we do; the op counts recorded in the manifest say
what was actually quantized. Quality, size and speed are measured against the fp32 source on the same
test split, through the served pipeline, and written into the variant's manifest.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import shutil
import statistics
import tempfile
import time
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from service.pipelines.sentiment import SentimentPipeline
from service.repository.manifest import read_manifest, write_manifest
from service.repository.repository import load_version


def op_counts(path: pathlib.Path) -> dict[str, int]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(collections.Counter(node.op_type for node in graph.node).items()))


def quantize(source_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, Any]:
    source = read_manifest(source_dir)
    onnx_file = source.data["onnx"].get("file", "model.onnx")
    out_dir.mkdir(parents=True, exist_ok=False)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source.path(onnx_file)), str(prepared), skip_symbolic_shape=False)
        quantize_dynamic(str(prepared), str(out_dir / onnx_file), weight_type=QuantType.QInt8)
    for name in source.files:
        if name != onnx_file:
            shutil.copy2(source.path(name), out_dir / name)
    return {
        "method": "onnxruntime.quantization.quantize_dynamic, weight_type QInt8, after quant_pre_process",
        "source": {"name": source.name, "version": source.version, "sha256": source.files[onnx_file]},
        "bytes": {"fp32": source.path(onnx_file).stat().st_size, "int8": (out_dir / onnx_file).stat().st_size},
        "ops_fp32": op_counts(source.path(onnx_file)),
        "ops_int8": op_counts(out_dir / onnx_file),
    }


def latency_ms(version_dir: pathlib.Path, texts: list[str], batch: int, repeats: int = 3) -> float:
    """Median milliseconds per batch of `batch` texts, one onnxruntime thread."""
    pipeline = SentimentPipeline(load_version(version_dir, intra_op_threads=1))
    batches = [texts[i : i + batch] for i in range(0, min(len(texts), batch * 20), batch)]
    pipeline(batches[0])  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in batches:
            pipeline(chunk)
        runs.append((time.perf_counter() - start) * 1000 / len(batches))
    return round(statistics.median(runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="exported/<name>-int8/<version>")
    args = parser.parse_args()

    from training.data.sentiment import load_splits  # training-only imports stay out of module import
    from training.evaluate.sentiment import evaluate_version

    report = quantize(args.source_dir, args.out)
    source = read_manifest(args.source_dir)
    data = {k: v for k, v in source.data.items() if k not in ("files", "format_version", "metrics")}
    data.update({
        "name": args.out.parent.name, "version": args.out.name, "variant": "int8", "default_for_task": False,
        "description": f"{source.data.get('description', '')} Dynamic int8 variant of {source.name} "
                       f"version {source.version}.",
    })
    write_manifest(args.out, data)  # the evaluation loads the variant like the server does: checksummed
    test = load_splits()[0]["test"]
    texts = [s.text for s in test]
    quality = {which: evaluate_version(d, test)["served"]["pooled"]
               for which, d in (("fp32", args.source_dir), ("int8", args.out))}
    report["quality_delta_vs_fp32"] = {
        key: round(quality["int8"][key] - quality["fp32"][key], 4) for key in ("macro_f1", "accuracy")
    }
    report["latency_ms_per_batch"] = {
        f"batch_{b}": {"fp32": latency_ms(args.source_dir, texts, b), "int8": latency_ms(args.out, texts, b)}
        for b in (1, 32)
    }
    data.update({"quantization": report, "metrics": evaluate_version(args.out, test)})
    write_manifest(args.out, data)
    print(json.dumps({k: report[k] for k in ("bytes", "quality_delta_vs_fp32", "latency_ms_per_batch")}, indent=1))
    print("fp32 ops", report["ops_fp32"])
    print("int8 ops", report["ops_int8"])


if __name__ == "__main__":
    main()
