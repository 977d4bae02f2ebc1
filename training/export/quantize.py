"""Dynamic int8 variant of an exported model, published as a model of its own with measured quality.

    python -m training.export.quantize exported/sentiment-bigru/1 --out exported/sentiment-bigru-int8/1
    python -m training.export.quantize exported/transformer/1 --out exported/transformer-int8/1

Every ONNX graph of the version is quantized (one model.onnx for sentiment; encoder.onnx and
decoder_step.onnx for translation: the manifest's `onnx.graphs`); graph inputs and outputs do not
change, so the manifest's io and decoding sections carry over as they are.

quant_pre_process runs first (shape inference and graph cleanup): on dynamo-exported graphs weights can
arrive through Concat/Identity nodes, and quantize_dynamic silently leaves such weights fp32. Then
quantize_dynamic (int8 weights, activations quantized at run time). onnxruntime has a quantized LSTM
(DynamicQuantizeLSTM) but no quantized GRU, so GRU weights stay fp32 whatever we do; the op counts
recorded in the manifest say what was actually quantized. Quality is measured on the same test split
through the served pipeline and written into the variant's manifest with its delta to the fp32 source.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import pathlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from service.model.manifest import Manifest, read_manifest, republish_manifest
from service.pipelines.sentiment import SentimentPipeline
from service.runtime.version_loader import load_version
from training.export.shared_weights import share_initializers


def op_counts(path: pathlib.Path) -> dict[str, int]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(collections.Counter(node.op_type for node in graph.node).items()))


def graph_files(manifest: Manifest) -> list[str]:
    """The version's ONNX graphs: `onnx.graphs` when it has several, else the one `onnx.file`."""
    section = manifest.data["onnx"]
    return sorted(section.get("graphs") or [section.get("file", "model.onnx")])


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    total: collections.Counter[str] = collections.Counter()
    for count in counts:
        total.update(count)
    return dict(sorted(total.items()))


def prepare(source: pathlib.Path, prepared: pathlib.Path) -> bool:
    """quant_pre_process; True if its symbolic shape inference ran. That step cannot finish on the
    Transformer's decoder-step graph (the cache axis grows inside it: "Incomplete symbolic shape
    inference"), so such graphs are prepared with ONNX shape inference and the graph optimisation only,
    which is what exposes the weights to quantize_dynamic (the op counts show what got quantized).
    The NER BiLSTM-CRF graph fails inside it differently (a TypeError on a Shape node with no inferred
    input shape), so any failure of the symbolic step falls back the same way; a failure of the
    fallback itself is raised."""
    # quant_pre_process writes scratch files (sym_shape_infer_temp.onnx, <uuid>.data) into the working
    # directory and leaves some behind: run it inside the scratch folder of `prepared`. Paths are made
    # absolute first: a relative source (the command line's `exported/...`) would resolve in there.
    source, prepared = source.resolve(), prepared.resolve()
    with contextlib.chdir(prepared.parent):
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            return True
        except Exception:  # onnxruntime raises a bare Exception or whatever its inference tripped on
            pass
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        return False


def quantize(source_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, Any]:
    """Quantize every graph of `source_dir` into `out_dir` (other files copied). Report per graph and summed."""
    source = read_manifest(source_dir)
    files = graph_files(source)
    out_dir.mkdir(parents=True, exist_ok=False)
    graphs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for onnx_file in files:
            prepared = pathlib.Path(tmp) / f"prepared-{onnx_file}"
            # quant_pre_process copies the graph to a folder of its own, where a reference to the
            # version's shared_weights.bin would not resolve: it gets the graph with its weights inline.
            inline = pathlib.Path(tmp) / f"inline-{onnx_file}"
            onnx.save_model(onnx.load(str(source.path(onnx_file))), str(inline))
            symbolic = prepare(inline, prepared)
            quantize_dynamic(str(prepared), str(out_dir / onnx_file), weight_type=QuantType.QInt8)
            graphs[onnx_file] = {
                "bytes": {"fp32": inline.stat().st_size, "int8": (out_dir / onnx_file).stat().st_size},
                "ops_fp32": op_counts(source.path(onnx_file)), "ops_int8": op_counts(out_dir / onnx_file),
                "symbolic_shape_inference": symbolic,
            }
    # The source's shared fp32 weights (training/export/shared_weights.py) are not copied: the int8
    # graphs were written whole, and what they have in common (the quantized embedding) is shared anew.
    source_shared = (source.data["onnx"].get("external_data") or {}).get("file")
    for name in source.files:
        if name not in files and name != source_shared:
            shutil.copy2(source.path(name), out_dir / name)
    shared = share_initializers(out_dir, files) if len(files) > 1 else {"file": None}
    return {
        "method": "onnxruntime.quantization.quantize_dynamic, weight_type QInt8, after quant_pre_process",
        "source": {"name": source.name, "version": source.version,
                   **({"sha256": source.files[files[0]]} if len(files) == 1
                      else {"sha256": {f: source.files[f] for f in files}})},
        "graphs": graphs,
        "bytes": {k: sum(g["bytes"][k] for g in graphs.values()) for k in ("fp32", "int8")},
        "ops_fp32": _summed([g["ops_fp32"] for g in graphs.values()]),
        "ops_int8": _summed([g["ops_int8"] for g in graphs.values()]),
        **({"external_data": shared} if shared["file"] else {}),
    }


# -- measured quality and speed, per task ---------------------------------------------------------------

def sentiment_latency_ms(version_dir: pathlib.Path, texts: list[str], batch: int, repeats: int = 3) -> float:
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


def measure_sentiment(source_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, Any]:
    from training.data.sentiment import load_splits  # training-only imports stay out of module import
    from training.evaluate.sentiment import evaluate_version

    test = load_splits()[0]["test"]
    texts = [s.text for s in test]
    metrics = {"fp32": evaluate_version(source_dir, test), "int8": evaluate_version(out_dir, test)}
    quality = {k: m["served"]["pooled"] for k, m in metrics.items()}
    return {
        "metrics": metrics["int8"],
        "quality_delta_vs_fp32": {key: round(quality["int8"][key] - quality["fp32"][key], 4)
                                  for key in ("macro_f1", "accuracy")},
        # Per domain too: a few hundred sentences each, so noisier than the pooled delta above.
        "macro_f1_delta_vs_fp32_by_domain": {
            domain: round(served["macro_f1"] - metrics["fp32"]["served"][domain]["macro_f1"], 4)
            for domain, served in metrics["int8"]["served"].items()},
        "fp32_measured_beside": {domain: {k: served[k] for k in ("macro_f1", "accuracy")}
                                 for domain, served in metrics["fp32"]["served"].items()},
        "latency_ms_per_batch": {f"batch_{b}": {"fp32": sentiment_latency_ms(source_dir, texts, b),
                                                "int8": sentiment_latency_ms(out_dir, texts, b)} for b in (1, 32)},
    }


def measure_translation(source_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, Any]:
    """BLEU/chrF greedy and beam 4 of both on the test chapters, through the served pipeline.

    Both are measured here, side by side (not the fp32 manifest's figures): the speeds then come
    from the same machine state too.
    """
    from training.data.translation import load_splits
    from training.evaluate.translation import SETTINGS, evaluate_version

    test = load_splits()[0]["test"]
    metrics = {"fp32": evaluate_version(source_dir, test), "int8": evaluate_version(out_dir, test)}
    return {
        "metrics": {"split": "test", **metrics["int8"]},
        "quality_delta_vs_fp32": {
            setting: {key: round(metrics["int8"][setting][key] - metrics["fp32"][setting][key], 2)
                      for key in ("bleu", "chrf")} for setting in SETTINGS},
        "fp32_measured_beside": {setting: {k: metrics["fp32"][setting][k] for k in ("bleu", "chrf", "speed_1_thread")}
                                 for setting in SETTINGS},
    }


def measure_ner(source_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, Any]:
    """Entity F1 (seqeval, micro) of both on the test tweets, through the served pipeline."""
    from training.data.ner import load_splits
    from training.evaluate.ner import evaluate_version

    parts = load_splits()[0]
    metrics = {key: evaluate_version(version_dir, parts["test"], parts["train"])
               for key, version_dir in (("fp32", source_dir), ("int8", out_dir))}
    served = {k: m["served"] for k, m in metrics.items()}
    return {
        "metrics": metrics["int8"],
        "quality_delta_vs_fp32": {key: round(served["int8"]["micro"][key] - served["fp32"]["micro"][key], 4)
                                  for key in ("f1-score", "precision", "recall")},
        "ms_per_tweet_batch32": {k: served[k]["ms_per_tweet_batch32"] for k in served},
    }


def measure_recommendation(source_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, Any]:
    """Sampled and full-ranking HR@10 / NDCG@10 of both on the test users, through the served pipeline."""
    from training.data.movielens import load_splits
    from training.evaluate.recommendation import evaluate_version

    data, splits, _ = load_splits(read_manifest(source_dir).data["data"]["dataset"])
    timed = {}
    for key, version_dir in (("fp32", source_dir), ("int8", out_dir)):
        start = time.perf_counter()
        timed[key] = (evaluate_version(version_dir, data, splits.test), time.perf_counter() - start)
    served = {k: m["served"] for k, (m, _) in timed.items()}
    return {
        "metrics": {"split": "test", **timed["int8"][0]},
        "quality_delta_vs_fp32": {key: round(served["int8"][key] - served["fp32"][key], 4) for key in served["fp32"]},
        "evaluation_seconds": {k: round(seconds, 1) for k, (_, seconds) in timed.items()},
    }


MEASURES: dict[str, Callable[[pathlib.Path, pathlib.Path], dict[str, Any]]] = {
    "sentiment": measure_sentiment, "translation": measure_translation, "ner": measure_ner,
    "recommendation": measure_recommendation,
}


SOURCE_PARITY = ("parity", "parity_vs_torch")  # manifest keys some exporters use for fp32 graph vs torch


def publish(source_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, Any]:
    """Quantize, write a checksummed manifest (the evaluation loads the variant as the server does),
    measure, and write the measured manifest."""
    report = quantize(source_dir, out_dir)
    source = read_manifest(source_dir)
    # Measured quality is the variant's own (below): the source's test and dev numbers are not carried over,
    # and its torch-vs-graph parity describes the fp32 graph, so it is kept as the source's, by name.
    not_carried = ("metrics", "dev_metrics", "export_parity", *SOURCE_PARITY)
    # The variant's shared weights are its own (quantize), not the source's.
    onnx_section = {k: v for k, v in source.data["onnx"].items() if k != "external_data"}
    if "external_data" in report:
        onnx_section["external_data"] = report["external_data"]
    changes: dict[str, Any] = {
        "name": out_dir.parent.name, "version": out_dir.name, "variant": "int8", "default_for_task": False,
        "description": f"{source.data.get('description', '')} Dynamic int8 variant of {source.name} "
                       f"version {source.version}.",
        "onnx": onnx_section,
    }
    variant = republish_manifest(out_dir, changes, drop=not_carried, source=source)
    measured = MEASURES[source.data["task"]](source_dir, out_dir)
    report.update({k: v for k, v in measured.items() if k != "metrics"})
    source_parity = {k: source.data[k] for k in SOURCE_PARITY if k in source.data}
    if source_parity:
        report["source"] = {**report["source"], "parity": source_parity}
    republish_manifest(out_dir, {"quantization": report, "metrics": measured["metrics"]}, source=variant)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="exported/<name>-int8/<version>")
    args = parser.parse_args()
    report = publish(args.source_dir, args.out)
    shown = ("bytes", "quality_delta_vs_fp32", "latency_ms_per_batch", "fp32_measured_beside",
             "ms_per_tweet_batch32", "evaluation_seconds")
    print(json.dumps({k: report[k] for k in shown if k in report}, indent=1))
    print("fp32 ops", report["ops_fp32"])
    print("int8 ops", report["ops_int8"])


if __name__ == "__main__":
    main()
