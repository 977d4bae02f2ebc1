"""A local Hugging Face Marian or BART checkpoint published as a translation version
(docs/translation-graphs.md).

The version is what our own translation exporters write: encoder.onnx + decoder_step.onnx (weights they
share stored once), tokenizer.json and a manifest whose `decoding` section the generic pipeline reads,
so greedy, beam search, n-best, streaming and alignments work unchanged. Token ids follow the
checkpoint: bos_id is config.decoder_start_token_id (Marian starts from its pad token, BART from
</s>), eos_id and pad_id are config's. Sources are what the model was trained on: Marian's
`tokenizer.encode(text, add_special_tokens=False).ids + [eos]`, as MarianTokenizer builds them; BART's
`[bos] + ids + [eos]` (`<s> text </s>`, RobertaProcessing), the `<s>` recorded as the manifest's
`decoding.source_prefix_ids`. A tokenizer.json whose own post-processor builds something else is refused,
since the served sources would then differ from what `generate` is given. A generation config's
`forced_bos_token_id` (bart-large's <s> after the decoder start) is applied inside the step graph on the
first step (hf_seq2seq_graphs.py), so greedy and beam search emit it as `generate` does.

The tokenizer must be a `tokenizers` tokenizer.json whose ids are the model's (BART checkpoints ship
one: byte-level BPE, so no text has unknown tokens). Marian checkpoints ship
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
from tokenizers import Tokenizer

from service.model.manifest import write_manifest
from service.pipelines.greedy import greedy_search
from service.pipelines.seq2seq_runtime import StepRunner
from service.runtime.version_loader import load_version
from training.batching import pad_batch
from training.export.hf_checkpoint import ImportRefused, offline, parameter_count, read_config, read_tokenizer
from training.export.hf_seq2seq_graphs import SUPPRESSED_BIAS, export_hf_seq2seq_graphs, forced_first_bias
from training.export.onnx_export import OPSET, describe_io
from training.export.shared_weights import share_initializers
from training.export.translation_parity import LOG_PROB_TOLERANCE, PARITY_MAX_STEPS, stepwise_log_probs

# model_type -> the transformers class that loads it.
SUPPORTED = {"marian": "MarianMTModel", "bart": "BartForConditionalGeneration"}
MAX_SOURCE_TOKENS = 256
MAX_TARGET_TOKENS = 256
SAMPLE_INPUTS = ["The weather is fine today.", "Where is the station?", "Thank you."]
# Generation settings HF `generate` would apply that the served decoding does not; recorded when set.
# Each with the value that means "off".
NOT_APPLIED = {"no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "repetition_penalty": 1.0,
               "min_length": 0, "min_new_tokens": None, "forced_eos_token_id": None, "begin_suppress_tokens": None}
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
    return {key: value for key, value in values.items() if value not in (None, [], NOT_APPLIED[key])}


def source_prefix(model_type: str, config: Any) -> list[int]:
    """Ids before a source's subwords, as the checkpoint's tokenizer class builds sources: BART's <s>."""
    return [int(config.bos_token_id)] if model_type == "bart" else []


def check_source_format(tokenizer: Tokenizer, prefix: list[int], eos_id: int, path: pathlib.Path) -> None:
    """A tokenizer.json with a post-processor must build the very sources the served pipeline builds
    (prefix + subwords + [eos]); one without leaves them to the pipeline."""
    probe = "Hello world"
    bare = tokenizer.encode(probe, add_special_tokens=False).ids
    built = tokenizer.encode(probe).ids
    expected = [*prefix, *bare, eos_id]
    if built not in (bare, expected):
        raise ImportRefused(f"{path}: its post-processor encodes {probe!r} as {built}, but the model expects "
                            f"{expected} (prefix {prefix} + subwords + eos {eos_id})")


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


def check_parity(model: Any, version_dir: pathlib.Path, sources: list[list[int]], logit_bias: torch.Tensor,
                 first_bias: torch.Tensor) -> dict[str, Any]:
    """HF torch vs the served step graphs on `sources`; raises ImportRefused beyond the tolerance.
    `logit_bias` is added at every step, `first_bias` at the first (a forced BOS; zeros if none)."""
    runner = StepRunner(load_version(version_dir))
    src, src_mask = pad_batch(sources, runner.pad_id)
    greedy = hf_greedy(model, src, src_mask, PARITY_MAX_STEPS)
    targets, target_mask = pad_batch([[runner.bos_id, *row] for row in greedy], runner.pad_id)
    with torch.no_grad():
        logits = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=targets).logits + logit_bias
        logits[:, 0] += first_bias
    reference = torch.log_softmax(logits, dim=-1).numpy()
    served = stepwise_log_probs(runner, src.numpy(), src_mask.numpy(), targets.numpy())
    # Suppressed tokens sit near -1e4, where a float32 step is ~1e-3: compared there, rounding alone would
    # fail the check (measured 9.8e-4 on an opus-mt-sized model); they are never chosen, so they are left out
    # (on the first step also every token a forced BOS pushes there).
    compared = target_mask.numpy().astype(bool)[:, :, None] & (logit_bias == 0).numpy()[None, None, :]
    compared[:, 0] &= (first_bias == 0).numpy()[None, :]
    difference = float(np.abs(reference - served)[compared].max())
    served_greedy = [h.token_ids for h in greedy_search(runner, src.numpy(), src_mask.numpy(),
                                                        np.full(len(sources), PARITY_MAX_STEPS))]
    matches = served_greedy == greedy
    if not (difference <= LOG_PROB_TOLERANCE and matches):
        raise ImportRefused(f"export parity failed: max log-prob difference {difference:.2e} "
                            f"(tolerance {LOG_PROB_TOLERANCE}), greedy tokens equal: {matches}")
    return {"max_abs_log_prob_difference": difference, "tolerance": LOG_PROB_TOLERANCE,
            "greedy_tokens_equal": matches, "texts": len(sources), "reference": "transformers torch model"}


def load_seq2seq(checkpoint: pathlib.Path) -> Any:
    config = read_config(checkpoint)
    if config["model_type"] not in SUPPORTED:
        raise ImportRefused(f"{checkpoint / 'config.json'}: model_type {config['model_type']!r}; the translation "
                            f"import exports {', '.join(SUPPORTED)} encoder-decoders "
                            f"({', '.join(SUPPORTED.values())})")
    import transformers  # training-only dependency

    model_class = getattr(transformers, SUPPORTED[config["model_type"]])
    try:
        model = model_class.from_pretrained(str(checkpoint), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise ImportRefused(f"{checkpoint}: transformers cannot load it as {model_class.__name__} ({exc})") from exc
    if getattr(model.config, "decoder_vocab_size", None) not in (None, model.config.vocab_size):
        raise ImportRefused(f"{checkpoint / 'config.json'}: separate source and target vocabularies "
                            f"({model.config.vocab_size} vs {model.config.decoder_vocab_size}); one tokenizer.json "
                            "serves both sides, so the vocabulary must be shared")
    return model.eval()


def import_translation(checkpoint: pathlib.Path, version_dir: pathlib.Path, name: str, source_language: str,
                       target_language: str) -> dict[str, Any]:
    """Export the Marian or BART model in `checkpoint` as `version_dir`; returns the manifest written."""
    offline()
    model = load_seq2seq(checkpoint)
    model_type = model.config.model_type
    hint = SPM_REFUSAL if (checkpoint / "source.spm").exists() else "The translation import needs a tokenizer.json"
    tokenizer = read_tokenizer(checkpoint, hint)
    config = model.config
    bos_id, eos_id, pad_id = config.decoder_start_token_id, config.eos_token_id, config.pad_token_id
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ImportRefused(f"{checkpoint / 'tokenizer.json'}: {tokenizer.get_vocab_size()} tokens, but the model "
                            f"has {config.vocab_size}")
    if not isinstance(eos_id, int) or tokenizer.id_to_token(eos_id) is None:
        raise ImportRefused(f"{checkpoint / 'tokenizer.json'}: no token with the model's eos_token_id {eos_id}")
    prefix = source_prefix(model_type, config)
    check_source_format(tokenizer, prefix, eos_id, checkpoint / "tokenizer.json")
    max_positions = int(config.max_position_embeddings)
    generation = model.generation_config
    suppressed = suppressed_tokens(generation)
    forced_bos = getattr(generation, "forced_bos_token_id", None)

    if version_dir.exists():
        shutil.rmtree(version_dir)  # a version folder is written whole; stale files would break its checksums
    version_dir.mkdir(parents=True)
    exported = export_hf_seq2seq_graphs(model, version_dir, suppressed, forced_bos)
    graphs = exported.pop("graphs")
    shared = share_initializers(version_dir, sorted(graphs))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(version_dir / "tokenizer.json"))  # its post-processor is never used: the pipeline adds ids
    unk_token = next((t for t in ("<unk>", "[UNK]") if tokenizer.token_to_id(t) is not None), None)
    limits = {"max_source_tokens": min(MAX_SOURCE_TOKENS, max_positions),
              "max_target_tokens": min(MAX_TARGET_TOKENS, max_positions - 1)}
    manifest: dict[str, Any] = {
        "name": name, "version": version_dir.name, "task": "translation", "default_for_task": False,
        "description": f"Imported Hugging Face {type(model).__name__} ({config.encoder_layers}+"
                       f"{config.decoder_layers} layers, d{config.d_model}, {parameter_count(model):,} parameters) "
                       f"from {checkpoint.name}; "
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
                     "source_prefix_ids": prefix,
                     "defaults": {"beam_size": 1, "length_penalty": 0.6}},
        "languages": {"source": source_language, "target": target_language},
        "sample_inputs": SAMPLE_INPUTS,
        "import": {"source": str(checkpoint.resolve()), "model_type": model_type,
                   "parameters": parameter_count(model),
                   "suppressed_tokens": suppressed, "suppressed_bias": SUPPRESSED_BIAS,
                   "forced_first_token": forced_bos,
                   "generation_settings_not_applied": not_applied(generation)},
    }
    write_manifest(version_dir, manifest)
    encodings = tokenizer.encode_batch(SAMPLE_INPUTS, add_special_tokens=False)
    sources = [[*prefix, *encoding.ids, eos_id] for encoding in encodings]
    bias = torch.zeros(config.vocab_size)
    bias[suppressed] = SUPPRESSED_BIAS
    try:
        first = torch.zeros(config.vocab_size) if forced_bos is None else forced_first_bias(config.vocab_size,
                                                                                            forced_bos)
        manifest["export_parity"] = check_parity(model, version_dir, sources, bias, first)
    except ImportRefused:
        shutil.rmtree(version_dir)
        raise
    write_manifest(version_dir, manifest)
    return manifest
