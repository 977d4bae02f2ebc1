"""A local Hugging Face Marian checkpoint published as a translation version (docs/translation-graphs.md).

The version is what our own translation exporters write: encoder.onnx + decoder_step.onnx (weights they
share stored once), tokenizer.json and a manifest whose `decoding` section the generic pipeline reads,
so greedy, beam search, n-best, streaming and alignments work unchanged. Token ids follow the
checkpoint: bos_id is config.decoder_start_token_id (Marian starts from its pad token), eos_id and
pad_id are config's. Sources are `tokenizer.encode(text, add_special_tokens=False).ids + [eos]`, as
MarianTokenizer builds them.

The tokenizer must be a `tokenizers` tokenizer.json whose ids are the model's. Marian checkpoints ship
SentencePiece files (source.spm, target.spm, vocab.json) instead; they are refused with that reason:
transformers 5.23 has no fast converter for MarianTokenizer and `sentencepiece` is not installed here.

Parity (recorded in the manifest's `export_parity`; the import fails beyond it): the HF model's own
teacher-forced log-probs vs the step graphs run token by token through service.pipelines.seq2seq_runtime,
on its greedy output for the sample texts, and HF `generate` greedy tokens vs the served greedy search.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import numpy as np
import torch

from service.model.manifest import write_manifest
from service.pipelines.greedy import greedy_search
from service.pipelines.seq2seq_runtime import StepRunner
from service.runtime.version_loader import load_version
from training.batching import pad_batch
from training.export.hf_checkpoint import ImportRefused, offline, parameter_count, read_config, read_tokenizer
from training.export.hf_seq2seq_graphs import SUPPRESSED_BIAS, export_marian_graphs
from training.export.onnx_export import OPSET, describe_io
from training.export.shared_weights import share_initializers
from training.export.translation_parity import LOG_PROB_TOLERANCE, PARITY_MAX_STEPS, stepwise_log_probs

SUPPORTED = ("marian",)
MAX_SOURCE_TOKENS = 256
MAX_TARGET_TOKENS = 256
SAMPLE_INPUTS = ["The weather is fine today.", "Where is the station?", "Thank you."]
# Generation settings HF `generate` would apply that the served decoding does not; recorded when set.
# Each with the value that means "off".
NOT_APPLIED = {"no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "repetition_penalty": 1.0,
               "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None}
SPM_REFUSAL = ("This Marian checkpoint ships SentencePiece files (source.spm/target.spm) only. They cannot be "
               "converted to a `tokenizers` tokenizer.json here: transformers 5.23 has no fast converter for "
               "MarianTokenizer and the `sentencepiece` package is not installed. Put a tokenizer.json whose "
               "token ids are the model's (vocab.json) in the folder")


def suppressed_tokens(generation: Any) -> list[int]:
    """Tokens `generate` never emits: single-token bad_words_ids and suppress_tokens."""
    banned = [ids[0] for ids in (generation.bad_words_ids or []) if len(ids) == 1]
    return sorted({int(t) for t in [*banned, *(generation.suppress_tokens or [])]})


def not_applied(generation: Any) -> dict[str, Any]:
    values = {key: getattr(generation, key, off) for key, off in NOT_APPLIED.items()}
    return {key: value for key, value in values.items() if value is not None and value != NOT_APPLIED[key]}


def hf_greedy(model: Any, src: torch.Tensor, src_mask: torch.Tensor, max_steps: int) -> list[list[int]]:
    """HF `generate`, greedy, as the served decoding runs it (no forced EOS at the budget, no n-gram
    blocking): tokens after the decoder start, up to and without EOS."""
    with torch.no_grad():
        output = model.generate(input_ids=src, attention_mask=src_mask, num_beams=1, do_sample=False,
                                max_new_tokens=max_steps, min_length=0, forced_eos_token_id=None,
                                no_repeat_ngram_size=0, repetition_penalty=1.0)
    rows = []
    for row in output[:, 1:].tolist():
        eos = model.config.eos_token_id
        rows.append(row[: row.index(eos)] if eos in row else row)
    return rows


def check_parity(model: Any, version_dir: pathlib.Path, sources: list[list[int]], logit_bias: torch.Tensor
                 ) -> dict[str, Any]:
    """HF torch vs the served step graphs on `sources`; raises ImportRefused beyond the tolerance."""
    runner = StepRunner(load_version(version_dir))
    src, src_mask = pad_batch(sources, runner.pad_id)
    greedy = hf_greedy(model, src, src_mask, PARITY_MAX_STEPS)
    targets, target_mask = pad_batch([[runner.bos_id, *row] for row in greedy], runner.pad_id)
    with torch.no_grad():
        logits = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=targets).logits + logit_bias
    reference = torch.log_softmax(logits, dim=-1).numpy()
    served = stepwise_log_probs(runner, src.numpy(), src_mask.numpy(), targets.numpy())
    # Suppressed tokens sit near -1e4, where a float32 step is ~1e-3: compared there, rounding alone would
    # fail the check (measured 9.8e-4 on an opus-mt-sized model); they are never chosen, so they are left out.
    allowed = (logit_bias == 0).numpy()
    difference = float(np.abs(reference - served)[target_mask.numpy().astype(bool)][:, allowed].max())
    served_greedy = [h.token_ids for h in greedy_search(runner, src.numpy(), src_mask.numpy(),
                                                        np.full(len(sources), PARITY_MAX_STEPS))]
    matches = served_greedy == greedy
    if not (difference <= LOG_PROB_TOLERANCE and matches):
        raise ImportRefused(f"export parity failed: max log-prob difference {difference:.2e} "
                            f"(tolerance {LOG_PROB_TOLERANCE}), greedy tokens equal: {matches}")
    return {"max_abs_log_prob_difference": difference, "tolerance": LOG_PROB_TOLERANCE,
            "greedy_tokens_equal": matches, "texts": len(sources), "reference": "transformers torch model"}


def load_marian(checkpoint: pathlib.Path) -> Any:
    config = read_config(checkpoint)
    if config["model_type"] not in SUPPORTED:
        raise ImportRefused(f"{checkpoint / 'config.json'}: model_type {config['model_type']!r}; the translation "
                            f"import exports {', '.join(SUPPORTED)} encoder-decoders (MarianMTModel)")
    from transformers import MarianMTModel  # training-only dependency

    try:
        model = MarianMTModel.from_pretrained(str(checkpoint), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise ImportRefused(f"{checkpoint}: transformers cannot load it as MarianMTModel ({exc})") from exc
    if model.config.decoder_vocab_size != model.config.vocab_size:
        raise ImportRefused(f"{checkpoint / 'config.json'}: separate source and target vocabularies "
                            f"({model.config.vocab_size} vs {model.config.decoder_vocab_size}); one tokenizer.json "
                            "serves both sides, so the vocabulary must be shared")
    return model.eval()


def import_translation(checkpoint: pathlib.Path, version_dir: pathlib.Path, name: str, source_language: str,
                       target_language: str) -> dict[str, Any]:
    """Export the Marian model in `checkpoint` as `version_dir`; returns the manifest written."""
    offline()
    model = load_marian(checkpoint)
    hint = SPM_REFUSAL if (checkpoint / "source.spm").exists() else "The translation import needs a tokenizer.json"
    tokenizer = read_tokenizer(checkpoint, hint)
    config = model.config
    bos_id, eos_id, pad_id = config.decoder_start_token_id, config.eos_token_id, config.pad_token_id
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ImportRefused(f"{checkpoint / 'tokenizer.json'}: {tokenizer.get_vocab_size()} tokens, but the model "
                            f"has {config.vocab_size}")
    if not isinstance(eos_id, int) or tokenizer.id_to_token(eos_id) is None:
        raise ImportRefused(f"{checkpoint / 'tokenizer.json'}: no token with the model's eos_token_id {eos_id}")
    max_positions = int(config.max_position_embeddings)
    generation = model.generation_config
    suppressed = suppressed_tokens(generation)

    if version_dir.exists():
        shutil.rmtree(version_dir)  # a version folder is written whole; stale files would break its checksums
    version_dir.mkdir(parents=True)
    exported = export_marian_graphs(model, version_dir, suppressed)
    graphs = exported.pop("graphs")
    shared = share_initializers(version_dir, sorted(graphs))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(version_dir / "tokenizer.json"))
    unk_token = next((t for t in ("<unk>", "[UNK]") if tokenizer.token_to_id(t) is not None), None)
    limits = {"max_source_tokens": min(MAX_SOURCE_TOKENS, max_positions),
              "max_target_tokens": min(MAX_TARGET_TOKENS, max_positions - 1)}
    manifest: dict[str, Any] = {
        "name": name, "version": version_dir.name, "task": "translation", "default_for_task": False,
        "description": f"Imported Hugging Face Marian model ({config.encoder_layers}+{config.decoder_layers} layers, "
                       f"d{config.d_model}, {parameter_count(model):,} parameters) from {checkpoint.name}; "
                       f"{source_language} -> {target_language}",
        "onnx": {"file": "encoder.onnx", "opset": OPSET, "exporter": "torch.onnx dynamo",
                 **describe_io(graphs["encoder.onnx"]),
                 "graphs": {file: describe_io(graph) for file, graph in graphs.items()},
                 **({"external_data": shared} if shared["file"] else {})},
        "tokenizer": "tokenizer.json",
        "special_tokens": {"pad_id": pad_id, "unk_id": tokenizer.token_to_id(unk_token) if unk_token else 0,
                           "bos_id": bos_id, "eos_id": eos_id},
        "limits": limits,
        "decoding": {**exported, "bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id, **limits,
                     "defaults": {"beam_size": 1, "length_penalty": 0.6}},
        "languages": {"source": source_language, "target": target_language},
        "sample_inputs": SAMPLE_INPUTS,
        "import": {"source": str(checkpoint.resolve()), "model_type": "marian",
                   "parameters": parameter_count(model),
                   "suppressed_tokens": suppressed, "suppressed_bias": SUPPRESSED_BIAS,
                   "generation_settings_not_applied": not_applied(generation)},
    }
    write_manifest(version_dir, manifest)
    encodings = tokenizer.encode_batch(SAMPLE_INPUTS, add_special_tokens=False)
    sources = [[*encoding.ids, eos_id] for encoding in encodings]
    bias = torch.zeros(config.vocab_size)
    bias[suppressed] = SUPPRESSED_BIAS
    try:
        manifest["export_parity"] = check_parity(model, version_dir, sources, bias)
    except ImportRefused:
        shutil.rmtree(version_dir)
        raise
    write_manifest(version_dir, manifest)
    return manifest
