"""The decoders section 4 compares, each behind one call: translate(texts, batch, beam) -> token lists.

- onnx: the service's own TranslationPipeline over the exported graphs (encoder once, decoder-step
  graph with the KV cache / GRU state), fp32 or the int8 variant, batch at a time (as evaluation runs it);
- onnx-scheduled: the same pipeline under the server's step scheduler (service/batching/step_scheduler.py),
  the batch as one admission, and onnx-batch: batch at a time in the model's runs (runs.run_in_runs: one
  text per run for int8), each as the server runs a batch in that mode (section 9);
- torch: the SAME pipeline object (tokenization, batching by options, greedy_search / beam_search,
  post-processing) with its step runner swapped for the torch model of that version, so only the engine
  under the search differs:
  - "torch-nocache" (the naive baseline): every step re-runs the whole decoder over the target prefix
    (self-attention over all positions, cross-attention keys/values re-projected), the encoder once;
  - "torch-cache": torch's own decode_step with the KV cache, the contract the graphs export;
  - the GRU seq2seq model has no cache question (its state is the hidden state): "torch" steps it;
- ort-beamsearch: onnxruntime's com.microsoft.BeamSearch op over the same two graphs
  (bench/converters/beam_search_op.py), the whole search inside onnxruntime; beam cases only;
- ct2: CTranslate2's Translator on the converted weights (bench/converters/ctranslate2_export.py),
  compute_type float32 or int8; its own C++ greedy/beam search. Length penalty: CTranslate2 divides by
  length ** alpha where we divide by the GNMT ((5 + length) / 6) ** alpha, so beam outputs can differ
  slightly (greedy ones must not: tests/test_ctranslate2_export.py).

The torch runners keep every tensor of the search state as numpy arrays (DecoderState), exactly as the
onnxruntime runner does, converting with torch.from_numpy (no copy).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.batching.runs import items_per_run_for, run_in_runs
from service.pipelines.seq2seq_runtime import DecoderState
from service.pipelines.translation import DecodeOptions, Translation, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version


def onnx_pipeline(version_dir: pathlib.Path, threads: int) -> TranslationPipeline:
    return TranslationPipeline(load_version(version_dir, intra_op_threads=threads))


class _TorchRunner:
    """The StepRunner interface (ids, encode, step) over a torch model."""

    def __init__(self, model: Any, decoding: dict[str, Any]) -> None:
        self.model = model
        self.bos_id, self.eos_id, self.pad_id = (int(decoding[k]) for k in ("bos_id", "eos_id", "pad_id"))


class TransformerNoCache(_TorchRunner):
    """State: the target prefix so far. Each step decodes the whole prefix again and keeps the last position."""

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> DecoderState:
        import torch

        with torch.inference_mode():
            memory = self.model.encode(torch.from_numpy(src_ids), torch.from_numpy(src_mask))
        prefix = np.zeros((src_ids.shape[0], 0), dtype=np.int64)
        return DecoderState(src_mask, {"memory": memory.numpy()}, {"prefix": prefix})

    def step(self, tokens: np.ndarray, current: DecoderState) -> tuple[np.ndarray, np.ndarray, DecoderState]:
        import torch

        from training.models.transformer import causal_bias

        prefix = np.concatenate([current.state["prefix"], tokens.astype(np.int64)[:, None]], axis=1)
        with torch.inference_mode():
            src_mask = torch.from_numpy(current.src_mask)
            cross = self.model.cross_attention_cache(torch.from_numpy(current.memory["memory"]))
            logits, _, weights = self.model.decode(torch.from_numpy(prefix), causal_bias(prefix.shape[1]), cross,
                                                   src_mask, None)
            log_probs = torch.log_softmax(logits[:, -1], dim=-1)
        return log_probs.numpy(), weights[:, -1].numpy(), DecoderState(current.src_mask, current.memory,
                                                                         {"prefix": prefix})


class TransformerCache(_TorchRunner):
    """torch's decode_step with the self-attention cache and cross keys/values computed once."""

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> DecoderState:
        import torch

        with torch.inference_mode():
            memory = self.model.encode(torch.from_numpy(src_ids), torch.from_numpy(src_mask))
            cross = self.model.cross_attention_cache(memory)
            empty = self.model.empty_cache(src_ids.shape[0])
        tensors = {f"cross_{i}_{j}": t.numpy() for i, kv in enumerate(cross) for j, t in enumerate(kv)}
        past = {f"past_{i}_{j}": t.numpy() for i, kv in enumerate(empty) for j, t in enumerate(kv)}
        return DecoderState(src_mask, tensors, past)

    def step(self, tokens: np.ndarray, current: DecoderState) -> tuple[np.ndarray, np.ndarray, DecoderState]:
        import torch

        layers = len(self.model.decoder_layers)

        def pairs(source: dict[str, np.ndarray], prefix: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(torch.from_numpy(source[f"{prefix}_{i}_0"]), torch.from_numpy(source[f"{prefix}_{i}_1"]))
                    for i in range(layers)]

        with torch.inference_mode():
            logits, present, weights = self.model.decode_step(
                torch.from_numpy(tokens.astype(np.int64))[:, None], pairs(current.memory, "cross"),
                torch.from_numpy(current.src_mask), pairs(current.state, "past"))
            log_probs = torch.log_softmax(logits, dim=-1)
        state = {f"past_{i}_{j}": t.numpy() for i, kv in enumerate(present) for j, t in enumerate(kv)}
        return log_probs.numpy(), weights.numpy(), DecoderState(current.src_mask, current.memory, state)


class Seq2SeqEager(_TorchRunner):
    """The GRU model's torch decode_step: memory (encoder states and keys) and the hidden state as numpy."""

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> DecoderState:
        import torch

        with torch.inference_mode():
            memory, state = self.model.encode(torch.from_numpy(src_ids), torch.from_numpy(src_mask))
        return DecoderState(src_mask, {"states": memory.states.numpy(), "keys": memory.keys.numpy()},
                            {k: v.numpy() for k, v in state.items()})

    def step(self, tokens: np.ndarray, current: DecoderState) -> tuple[np.ndarray, np.ndarray, DecoderState]:
        import torch

        from training.models.seq2seq_attention import EncoderMemory

        with torch.inference_mode():
            memory = EncoderMemory(torch.from_numpy(current.memory["states"]), torch.from_numpy(current.memory["keys"]))
            log_probs, state, weights = self.model.decode_step(
                torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(current.src_mask), memory,
                {k: torch.from_numpy(v) for k, v in current.state.items()})
        return log_probs.numpy(), weights.numpy(), DecoderState(current.src_mask, current.memory,
                                                                 {k: v.numpy() for k, v in state.items()})


TORCH_RUNNERS = {"torch-nocache": TransformerNoCache, "torch-cache": TransformerCache, "torch": Seq2SeqEager}


def torch_pipeline(version_dir: pathlib.Path, engine: str, threads: int) -> TranslationPipeline:
    import torch

    from bench.converters.version_weights import load_torch_model

    torch.set_num_threads(threads)
    pipeline = onnx_pipeline(version_dir, 1)
    # The pipeline types its runner slot as the onnxruntime StepRunner; this duck-typed torch one offers the
    # same ids, encode and step (that is the comparison), without being an onnxruntime session holder.
    pipeline.runner = TORCH_RUNNERS[engine](  # type: ignore[assignment]
        load_torch_model(version_dir), pipeline.model.manifest.data["decoding"])
    return pipeline


class Translator:
    """One engine, ready: translate(texts, beam) -> best hypothesis tokens per text, in order."""

    def __init__(self, engine: str, version_dir: pathlib.Path, threads: int, precision: str,
                 ct2_cache: pathlib.Path | None = None) -> None:
        self.engine = engine
        if engine == "ct2":
            import ctranslate2

            from bench.converters.ctranslate2_export import converted_model

            assert ct2_cache is not None, "ct2 needs a folder for converted models"
            self.pipeline = onnx_pipeline(version_dir, 1)  # its tokenizer and output budget, nothing else
            self.ct2 = ctranslate2.Translator(str(converted_model(version_dir, ct2_cache)), device="cpu",
                                              compute_type="int8" if precision == "int8" else "float32",
                                              intra_threads=threads, inter_threads=1)
        elif engine in ("onnx", "onnx-scheduled", "onnx-batch"):
            self.pipeline = onnx_pipeline(version_dir, threads)
        elif engine == "ort-beamsearch":
            from bench.converters.beam_search_op import BeamSearchOp

            assert ct2_cache is not None, "the BeamSearch op model is built into the cache folder"
            self.pipeline = onnx_pipeline(version_dir, 1)  # its tokenizer and output budget
            self.op = BeamSearchOp(version_dir, ct2_cache.parent / "beamsearch", threads)
        else:
            self.pipeline = torch_pipeline(version_dir, engine, threads)

    def supports(self, beam: int) -> bool:
        return self.engine != "ort-beamsearch" or beam > 1  # the op is beam search only

    def translate(self, texts: Sequence[str], beam: int) -> list[list[str]]:
        if self.engine == "ort-beamsearch":
            tokenizer = self.pipeline.tokenizer
            sources = [self.pipeline.source_ids(text) for text in texts]
            budget = max(self.pipeline.max_steps(len(s), DecodeOptions()) for s in sources)
            outputs = self.op.translate(sources, beam, budget)
            for ids in outputs:
                tokenizer.decode(ids, skip_special_tokens=True)
            return [[tokenizer.id_to_token(i) or "" for i in ids] for ids in outputs]
        if self.engine != "ct2":
            options = DecodeOptions(beam_size=beam, length_penalty=0.6)
            requests = [TranslationRequest(x, options) for x in texts]
            if self.engine == "onnx-scheduled":
                translations = scheduled(self.pipeline, requests)
            elif self.engine == "onnx-batch":
                translations = run_in_runs(self.pipeline, requests, items_per_run_for(self.pipeline.model))
            else:
                translations = self.pipeline(requests)
            # None only for a call whose stop signal fired, and no stop signals are passed here.
            return [t.hypotheses[0].tokens for t in translations if t is not None]
        tokenizer = self.pipeline.tokenizer
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        source_tokens = [e.tokens[: self.pipeline.max_source_tokens - 1] for e in encodings]
        budget = max(self.pipeline.max_steps(len(s) + 1, DecodeOptions()) for s in source_tokens)
        results = self.ct2.translate_batch(source_tokens, beam_size=beam, length_penalty=0.6,
                                           max_decoding_length=budget)
        best: list[list[str]] = [r.hypotheses[0] for r in results]
        for tokens in best:  # the text, as the pipeline produces it (part of every engine's work)
            # ct2 outputs tokens of the model's own vocabulary, so every one has an id.
            tokenizer.decode([i for i in map(tokenizer.token_to_id, tokens) if i is not None], skip_special_tokens=True)
        return best


def scheduled(pipeline: TranslationPipeline, requests: Sequence[TranslationRequest]) -> list[Translation | None]:
    """The requests as one call, decoded by the step scheduler as the server runs a batch of them (the model's
    items_per_run, its chunk budget): what the server adds over batch-at-a-time decoding, in-process."""
    from collections import deque

    from service.batching.step_scheduler import Admission, ScheduledCall, StepScheduler
    from service.model.pipeline import StepWork
    from service.model.timing import StageTimings

    answer: list[Translation | None] = []

    def deliver(outputs: list[Translation | None] | None, error: Exception | None) -> None:
        if error is not None or outputs is None:
            raise RuntimeError(f"scheduled decoding failed: {error}")
        answer.extend(outputs)
    call: ScheduledCall[Translation] = ScheduledCall(0, len(requests), lambda: False, deliver)
    units: deque[StepWork[Translation]] = deque(pipeline.plan(requests, items_per_run_for(pipeline.model)))
    pending = [Admission([call], units, False, StageTimings(), lambda _: None)]

    def take(light_room: bool, heavy_room: bool, retry: bool) -> Admission[Translation] | None:
        return pending.pop() if pending else None
    StepScheduler(take, pipeline.chunk_bytes).run()
    return answer
