"""A local Hugging Face sequence classifier (BERT family) published as a version Classification.Classify serves.

The served pipeline (service/pipelines/classification.py, `classification.add_special_tokens: true`) encodes
each text as [CLS] subwords [SEP] with the version's WordPiece tokenizer.json, pads with `special_tokens.pad_id`,
runs the graph on `input_ids` and `attention_mask`, and reads two outputs:

- `probabilities` [batch, labels]: softmax of the checkpoint's own logits (token_type_ids all 0, as HF
  defaults them for one text), label k = config.id2label[k], kept in the checkpoint's order;
- `attention` [batch, sequence]: a BertForSequenceClassification has no attention pooling of its own, so this
  is what its classifier reads most directly: the LAST layer's attention FROM the [CLS] position (whose
  hidden state the pooler and head classify), averaged over the heads, over the text's subwords. [CLS]
  (position 0), the closing [SEP] (the last real position) and padding get 0, and the rest is renormalised
  to sum to 1, since the pipeline lists only the text's subwords and the API promises their weights sum to
  1. It is attention, not attribution: it says where [CLS] looked in the last layer, not how much each
  subword changed the answer; the manifest's `import.attention` says so.

Parity: the HF model as loaded (its default attention implementation), each sample text alone and unpadded,
against onnxruntime on the padded batch; max |probability difference| is recorded in the manifest's
`export_parity` and an export beyond PARITY_TOLERANCE is not published.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer, processors
from torch import nn

from service.model.manifest import write_manifest
from training.export.hf_checkpoint import (
    ImportRefused,
    id2label_names,
    offline,
    parameter_count,
    read_config,
    read_tokenizer,
    tokenizer_model_type,
)
from training.export.onnx_export import OPSET, describe_io, export_onnx

PARITY_TOLERANCE = 1e-4  # absolute, on probabilities; float32 softmax rounding is ~1e-7
MAX_TOKENS = 256         # subwords per text with [CLS]/[SEP]; capped by the model's position embeddings
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[UNK]", "[PAD]")
ATTENTION = ("last layer's attention from [CLS], averaged over heads, [CLS]/[SEP]/padding set to 0, "
             "renormalised over the text's subwords (attention, not attribution)")
# A transformers model: its attributes (config, classifier) are built from the config, so the checker sees Any.
HFModule = Any
SAMPLE_INPUTS = ["Where is my parcel? It was due on Monday.",
                 "I would like my money back for the second charge on this month's invoice, please.",
                 "thanks"]


def served_tokenizer(tokenizer: Tokenizer, path: pathlib.Path, vocab_size: int) -> tuple[Tokenizer, bool]:
    """The tokenizer the server will use: WordPiece with the BERT specials, no padding or truncation (the
    pipeline pads and truncates itself, keeping [SEP]), encoding one text as [CLS] ... [SEP]. A tokenizer.json
    without a post-processor gets BERT's template (what the checkpoint was trained on); returns whether it
    was added."""
    kind = tokenizer_model_type(tokenizer)
    if kind != "WordPiece":
        raise ImportRefused(f"{path}: a {kind} tokenizer; a BERT-family classifier is served with its WordPiece "
                            "tokenizer ([CLS] word pieces [SEP])")
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ImportRefused(f"{path}: no {', '.join(missing)} token; the classification pipeline needs "
                            f"{SPECIAL_TOKENS}")
    if tokenizer.get_vocab_size() > vocab_size:
        raise ImportRefused(f"{path}: {tokenizer.get_vocab_size()} tokens but the model embeds only {vocab_size}")
    tokenizer.no_padding()
    tokenizer.no_truncation()
    added = tokenizer.post_processor is None
    if added:
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokens = tokenizer.encode("a", add_special_tokens=True).tokens
    if tokens[:1] != ["[CLS]"] or tokens[-1:] != ["[SEP]"]:
        raise ImportRefused(f"{path}: its post-processor encodes a text as {tokens}, not [CLS] ... [SEP] as a "
                            "BERT classifier reads it")
    return tokenizer, added


class ClassifierGraph(nn.Module):
    """input_ids, attention_mask -> probabilities [batch, labels], attention [batch, sequence] (see above).
    `model` must compute attention weights explicitly (attn_implementation="eager") to return them."""

    def __init__(self, model: HFModule) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids), output_attentions=True)
        from_cls = out.attentions[-1][:, :, 0, :].mean(dim=1)  # [batch, sequence]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        last = attention_mask.sum(dim=1, keepdim=True) - 1  # the closing [SEP] of each row
        text = (positions > 0) & (positions < last) & attention_mask.bool()
        weights = from_cls * text.to(from_cls.dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.softmax(out.logits, dim=-1), weights


def encode(tokenizer: Tokenizer, text: str, max_tokens: int) -> list[int]:
    """One text as the pipeline encodes it: [CLS] ... [SEP], cut to max_tokens keeping [SEP], [UNK] for none."""
    ids = tokenizer.encode(text, add_special_tokens=True).ids
    if len(ids) > max_tokens:
        ids = ids[: max_tokens - 1] + ids[-1:]
    return ids if len(ids) > 2 else [ids[0], token_id(tokenizer, "[UNK]"), *ids[1:]]


def padded(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def probability_parity(model: HFModule, onnx_path: pathlib.Path, rows: list[list[int]],
                       pad_id: int) -> dict[str, Any]:
    """HF's softmax(logits) per text alone vs onnxruntime's `probabilities` on the padded batch."""
    with torch.no_grad():
        expected = np.stack([torch.softmax(model(input_ids=torch.tensor([row]), attention_mask=torch.ones(
            1, len(row), dtype=torch.int64), token_type_ids=torch.zeros(1, len(row), dtype=torch.int64)).logits,
            dim=-1)[0].numpy() for row in rows])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    ids, mask = padded(rows, pad_id)
    got, attention = session.run(["probabilities", "attention"], {"input_ids": ids, "attention_mask": mask})
    return {"max_abs_probability_difference": float(np.abs(expected - got).max()),
            "argmax_agreement": float((expected.argmax(-1) == got.argmax(-1)).mean()),
            "max_attention_sum_error": float(np.abs(attention.sum(-1) - 1.0).max()),
            "texts": len(rows), "compared": "HF model per text unpadded vs onnxruntime padded batch",
            "tolerance": PARITY_TOLERANCE}


def token_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a special token served_tokenizer has checked is there."""
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ImportRefused(f"the tokenizer has no {token} token")
    return int(found)


def load_classifier(checkpoint: pathlib.Path, eager: bool) -> HFModule:
    from transformers import AutoModelForSequenceClassification  # training-only dependency

    options: dict[str, Any] = {"attn_implementation": "eager"} if eager else {}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint), local_files_only=True, **options)
    except (ValueError, OSError, KeyError) as exc:
        raise ImportRefused(f"{checkpoint}: not a sequence classifier transformers can load ({exc})") from exc
    return model.eval()


def import_classification(checkpoint: pathlib.Path, version_dir: pathlib.Path, name: str) -> dict[str, Any]:
    """Export the sequence classifier in `checkpoint` as `version_dir`; returns the manifest written."""
    offline()
    config = read_config(checkpoint)
    config_path = checkpoint / "config.json"
    labels = id2label_names(config, config_path)
    if len(labels) < 2:
        raise ImportRefused(f"{config_path}: id2label has {len(labels)} label; a classifier needs 2 or more "
                            "(a 1-output regression head is not a classifier)")
    if config.get("problem_type") not in (None, "single_label_classification"):
        raise ImportRefused(f"{config_path}: problem_type {config['problem_type']!r}; Classify answers one label "
                            "per text with probabilities summing to 1 (single_label_classification)")
    tokenizer = read_tokenizer(checkpoint, "A BERT classifier is served with the WordPiece tokenizer.json a fast "
                                           "BERT tokenizer saves (tokenizer.save_pretrained writes it)")
    reference = load_classifier(checkpoint, eager=False)
    if reference.config.model_type not in ("bert",):
        raise ImportRefused(f"{config_path}: model_type {reference.config.model_type!r}; the classification "
                            "import reads BERT-family checkpoints (model_type 'bert': [CLS] text [SEP], "
                            "token_type_ids 0)")
    if reference.config.num_labels != len(labels):
        raise ImportRefused(f"{config_path}: {len(labels)} labels but the head has {reference.config.num_labels} "
                            "outputs")
    tokenizer, template_added = served_tokenizer(tokenizer, checkpoint / "tokenizer.json",
                                                 int(reference.config.vocab_size))
    max_tokens = min(MAX_TOKENS, int(getattr(reference.config, "max_position_embeddings", MAX_TOKENS)))
    pad_id, unk_id = token_id(tokenizer, "[PAD]"), token_id(tokenizer, "[UNK]")
    graph = ClassifierGraph(load_classifier(checkpoint, eager=True)).eval()

    if version_dir.exists():
        shutil.rmtree(version_dir)  # a version folder is written whole; stale files would break its checksums
    version_dir.mkdir(parents=True)
    tokenizer.save(str(version_dir / "tokenizer.json"))
    (version_dir / "labels.json").write_text(json.dumps(labels, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = [encode(tokenizer, text, max_tokens) for text in SAMPLE_INPUTS]
    ids, mask = padded(rows, pad_id)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "probabilities": {0: "batch"}, "attention": {0: "batch", 1: "sequence"}}
    onnx_model = export_onnx(graph, (torch.from_numpy(ids), torch.from_numpy(mask)), version_dir / "model.onnx",
                             input_names=["input_ids", "attention_mask"],
                             output_names=["probabilities", "attention"], axes=axes)
    parity = probability_parity(reference, version_dir / "model.onnx", rows, pad_id)
    if not parity["max_abs_probability_difference"] <= PARITY_TOLERANCE:
        shutil.rmtree(version_dir)
        raise ImportRefused(f"export parity failed: onnxruntime probabilities differ from torch by "
                            f"{parity['max_abs_probability_difference']:.2e} (> {PARITY_TOLERANCE})")
    model_type = reference.config.model_type
    manifest = {
        "name": name, "version": version_dir.name, "task": "classification", "default_for_task": False,
        "description": f"Imported Hugging Face {model_type} sequence classifier ({parameter_count(reference):,} "
                       f"parameters, labels {', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''}) "
                       f"from {checkpoint.name}",
        "onnx": {"file": "model.onnx", "opset": OPSET, "exporter": "torch.onnx dynamo", **describe_io(onnx_model)},
        "tokenizer": "tokenizer.json",
        "labels": labels,
        "special_tokens": {"pad_id": pad_id, "unk_id": unk_id, "unk": "[UNK]"},
        "classification": {"add_special_tokens": True, "architecture": f"imported {model_type}"},
        "limits": {"max_tokens": max_tokens},
        "sample_inputs": SAMPLE_INPUTS,
        "import": {"source": str(checkpoint.resolve()), "model_type": model_type,
                   "architectures": config.get("architectures", []), "parameters": parameter_count(reference),
                   "labels_from": "config.id2label, in its order",
                   "attention": ATTENTION, "bert_template_added": template_added},
        "export_parity": parity,
    }
    write_manifest(version_dir, manifest)
    return manifest
