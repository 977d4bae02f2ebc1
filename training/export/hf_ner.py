"""A local Hugging Face token classifier (BERT family) published as a MiniLM-style NER version.

The served pipeline (service/pipelines/ner.py, `ner.tagger: minilm`) cuts text into words, encodes each
word with a WordPiece tokenizer.json between [CLS] and [SEP], reads the graph's `logits` at each word's
first subword and decodes them with Viterbi under BIO constraints. So the import needs:
- a token classifier whose forward takes input_ids and attention_mask (token_type_ids left at zeros);
- config.id2label in BIO (O, B-x, I-x): the labels are kept in the checkpoint's own order, since the
  pipeline reads label k from logit k; any other scheme (BIOES, IOB1 names, LABEL_0...) is refused;
- a WordPiece tokenizer.json with [CLS], [SEP] and [UNK] (the pipeline's special tokens).
Parity torch vs onnxruntime is measured on the sample texts through the pipeline's own encoding and
recorded in the manifest; an export whose logits differ by more than PARITY_TOLERANCE is not published.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from service.model.manifest import write_manifest
from service.pipelines.ner import BIO_VITERBI
from service.pipelines.ner_subwords import encode_words, prepare_tokenizer
from service.pipelines.ner_words import WORD_PATTERN, split_words
from training.export.hf_checkpoint import (
    ImportRefused,
    offline,
    parameter_count,
    read_config,
    read_tokenizer,
    tokenizer_model_type,
)
from training.export.onnx_export import OPSET, describe_io, export_onnx

PARITY_TOLERANCE = 1e-3  # absolute, on logits; observed ~1e-5 on a 22M-parameter MiniLM
MAX_WORDS = 128
MAX_SUBWORDS = 256
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[UNK]")
SAMPLE_INPUTS = ["Ada Lovelace wrote to Charles Babbage from London in 1843.",
                 "The Analytical Engine was never built."]


def bio_labels(config: dict[str, Any], config_path: pathlib.Path) -> list[str]:
    """config.id2label in id order, checked to be BIO tags the pipeline's decoder understands."""
    id2label = config.get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError) as exc:
        raise ImportRefused(f"{config_path}: id2label keys must be integers ({exc})") from exc
    if sorted(by_id) != list(range(len(by_id))) or not by_id:
        raise ImportRefused(f"{config_path}: id2label must map 0..n-1 to tag names, got keys {sorted(by_id)}")
    labels = [by_id[i] for i in range(len(by_id))]
    if all(label.startswith("LABEL_") for label in labels):
        raise ImportRefused(f"{config_path}: id2label holds only placeholder names ({labels[0]}, ...); "
                            "set the real tag names (O, B-x, I-x) in the checkpoint's config")
    wrong = [label for label in labels if label != "O" and not (label[:2] in ("B-", "I-") and len(label) > 2)]
    if wrong or labels.count("O") != 1:
        raise ImportRefused(f"{config_path}: id2label must be BIO tags (exactly one 'O', then 'B-<type>' and "
                            f"'I-<type>'); not BIO: {wrong or ['O' if 'O' not in labels else 'O (twice)']}. "
                            "The served decoder only reads BIO (convert BIOES/IOB1 tags before importing)")
    lonely = sorted({label[2:] for label in labels if label.startswith("I-")} -
                    {label[2:] for label in labels if label.startswith("B-")})
    if lonely:
        raise ImportRefused(f"{config_path}: id2label types {lonely} have I- tags but no B- tag; "
                            "a BIO entity starts with B-")
    if len(labels) != len(set(labels)):
        raise ImportRefused(f"{config_path}: id2label names a tag twice")
    return labels


def check_wordpiece(tokenizer: Any, path: pathlib.Path, vocab_size: int) -> None:
    kind = tokenizer_model_type(tokenizer)
    if kind != "WordPiece":
        raise ImportRefused(f"{path}: a {kind} tokenizer; the NER pipeline encodes words with a BERT WordPiece "
                            "tokenizer ([CLS] word pieces [SEP])")
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ImportRefused(f"{path}: no {', '.join(missing)} token; the NER pipeline needs {SPECIAL_TOKENS}")
    if tokenizer.get_vocab_size() > vocab_size:
        raise ImportRefused(f"{path}: {tokenizer.get_vocab_size()} tokens but the model embeds only {vocab_size}")


class LogitsGraph(nn.Module):
    """input_ids, attention_mask -> logits [batch, subwords, tags]: the graph the pipeline runs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def encoded_samples(tokenizer: Any, texts: list[str], max_subwords: int) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's own encoding of `texts` (padded with 0, masked)."""
    rows = [encode_words(tokenizer, [w.text for w in split_words(t)][:MAX_WORDS], max_subwords).ids for t in texts]
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def logits_parity(graph: nn.Module, onnx_path: pathlib.Path, ids: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = graph(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    (got,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
    real = mask.astype(bool)
    difference = float(np.abs(expected - got)[real].max())
    agreement = float((expected.argmax(-1) == got.argmax(-1))[real].mean())
    return {"max_abs_logit_difference": difference, "argmax_agreement": agreement,
            "positions": int(real.sum()), "tolerance": PARITY_TOLERANCE}


def import_ner(checkpoint: pathlib.Path, version_dir: pathlib.Path, name: str) -> dict[str, Any]:
    """Export the token classifier in `checkpoint` as `version_dir`; returns the manifest written."""
    offline()
    config = read_config(checkpoint)
    labels = bio_labels(config, checkpoint / "config.json")
    tokenizer = read_tokenizer(checkpoint, "The NER pipeline needs the WordPiece tokenizer.json a fast BERT "
                                           "tokenizer saves (tokenizer.save_pretrained writes it)")
    from transformers import AutoModelForTokenClassification  # training-only dependency

    try:
        model = AutoModelForTokenClassification.from_pretrained(str(checkpoint), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise ImportRefused(f"{checkpoint}: not a token classifier transformers can load ({exc})") from exc
    check_wordpiece(tokenizer, checkpoint / "tokenizer.json", int(model.config.vocab_size))
    if model.config.num_labels != len(labels):
        raise ImportRefused(f"{checkpoint / 'config.json'}: {len(labels)} labels but the head has "
                            f"{model.config.num_labels} outputs")
    max_subwords = min(MAX_SUBWORDS, int(getattr(model.config, "max_position_embeddings", MAX_SUBWORDS)))
    graph = LogitsGraph(model.eval()).eval()

    if version_dir.exists():
        shutil.rmtree(version_dir)  # a version folder is written whole; stale files would break its checksums
    version_dir.mkdir(parents=True)
    served_tokenizer = prepare_tokenizer(tokenizer)  # no padding/truncation: the pipeline encodes single words
    served_tokenizer.save(str(version_dir / "tokenizer.json"))
    ids, mask = encoded_samples(served_tokenizer, SAMPLE_INPUTS, max_subwords)
    axes = {name: {0: "batch", 1: "subwords"} for name in ("input_ids", "attention_mask", "logits")}
    onnx_model = export_onnx(graph, (torch.from_numpy(ids), torch.from_numpy(mask)), version_dir / "model.onnx",
                             input_names=["input_ids", "attention_mask"], output_names=["logits"], axes=axes)
    parity = logits_parity(graph, version_dir / "model.onnx", ids, mask)
    if not parity["max_abs_logit_difference"] <= PARITY_TOLERANCE:
        shutil.rmtree(version_dir)
        raise ImportRefused(f"export parity failed: onnxruntime logits differ from torch by "
                            f"{parity['max_abs_logit_difference']:.2e} (> {PARITY_TOLERANCE})")
    manifest = {
        "name": name, "version": version_dir.name, "task": "ner", "default_for_task": False,
        "description": f"Imported Hugging Face {model.config.model_type} token classifier "
                       f"({parameter_count(model):,} parameters, {len(labels)} BIO tags) from {checkpoint.name}",
        "onnx": {"file": "model.onnx", "opset": OPSET, "exporter": "torch.onnx dynamo", **describe_io(onnx_model)},
        "tokenizer": "tokenizer.json",
        "ner": {"tagger": "minilm", "word_pattern": WORD_PATTERN, "decoder": BIO_VITERBI},
        "labels": labels,
        "limits": {"max_words": MAX_WORDS, "max_subwords": max_subwords},
        "sample_inputs": SAMPLE_INPUTS,
        "import": {"source": str(checkpoint.resolve()), "model_type": model.config.model_type,
                   "architectures": config.get("architectures", []),
                   "parameters": parameter_count(model), "labels_from": "config.id2label, in its order"},
        "export_parity": parity,
    }
    write_manifest(version_dir, manifest)
    return manifest
