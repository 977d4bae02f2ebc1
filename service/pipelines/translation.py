"""Translation: tokenize -> encoder graph once -> greedy or beam search over the decoder-step graph.

Generic over docs/translation-graphs.md: everything model-specific comes from the manifest's
`decoding` section, so the Transformer and the GRU seq2seq model run through this same code. The
server (through the batcher) and training/evaluate/translation.py both call `TranslationPipeline`.

The batcher merges calls, and calls may ask for different decoding options, so the pipeline takes
`TranslationRequest`s (text + options; a bare string means the model's defaults) and decodes each
group of equal options as one batch. A dynamically quantized model (int8 made by quantize_dynamic)
computes its activation scales over the whole batch tensor, so it decodes one text per run (its beams
still share one): a text's translation must not depend on the texts it was batched with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.pipelines.beam_search import beam_search
from service.pipelines.greedy import greedy_search, greedy_stream
from service.pipelines.hypothesis import Hypothesis
from service.pipelines.seq2seq_runtime import StepRunner
from service.pipelines.timing import StageTimings
from service.repository.repository import LoadedModel

TASK = "translation"
MAX_BEAM_SIZE = 16  # beyond this, quality stops improving and a request could take seconds per text


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1
    length_penalty: float = 0.6   # GNMT alpha
    max_output_tokens: int = 0    # 0: from the source length (manifest max_output_ratio / _extra)
    n_best: int = 1
    alignment: bool = False


@dataclass(frozen=True)
class TranslationRequest:
    text: str
    options: DecodeOptions


@dataclass(frozen=True)
class TranslatedHypothesis:
    text: str
    score: float          # log_prob / GNMT length penalty (with the request's alpha)
    log_prob: float       # sum of token log-probs, [EOS] included
    tokens: list[str]     # target subword tokens, without [EOS]


@dataclass(frozen=True)
class Alignment:
    source_tokens: list[str]   # subwords + [EOS], the columns
    target_tokens: list[str]   # the best hypothesis's subwords, the rows
    weights: np.ndarray        # [target, source] cross-attention


@dataclass(frozen=True)
class Translation:
    hypotheses: list[TranslatedHypothesis]  # best first; n_best of them
    alignment: Alignment | None
    source_token_count: int                 # including [EOS]


@dataclass(frozen=True)
class StreamPiece:
    token: str   # the subword produced
    text: str    # the characters it adds to the translation so far (may be "")


class TranslationPipeline:
    def __init__(self, model: LoadedModel) -> None:
        if model.task != TASK or model.tokenizer is None:
            raise ValueError(f"model {model.name} is not a translation model with a tokenizer")
        self.model = model
        self.tokenizer = model.tokenizer
        self.runner = StepRunner(model)
        decoding: dict[str, Any] = model.manifest.data["decoding"]
        self.max_source_tokens = int(decoding["max_source_tokens"])
        self.max_target_tokens = int(decoding["max_target_tokens"])
        self.output_ratio = float(decoding.get("max_output_ratio", 1.5))
        self.output_extra = int(decoding.get("max_output_extra", 10))
        defaults = dict(decoding.get("defaults") or {})
        self.defaults = DecodeOptions(beam_size=int(defaults.get("beam_size", 1)),
                                      length_penalty=float(defaults.get("length_penalty", 0.6)))
        # Measured on transformer-int8, 300 dev verses, greedy: 88 translations changed between decoding
        # each alone and in batches of 32 (docs/serving.md).
        self.one_text_per_run = model.manifest.dynamically_quantized

    # -- sizes, shared with request validation ---------------------------------------------------------
    def source_ids(self, text: str) -> list[int]:
        """As in training: subword ids then [EOS], cut to max_source_tokens (validation refuses longer)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids[: self.max_source_tokens - 1]
        return [*ids, self.runner.eos_id]

    def estimate_tokens(self, item: str | TranslationRequest) -> int:
        text = item.text if isinstance(item, TranslationRequest) else item
        return min(self.max_source_tokens, len(text) // 4 + 1)

    def max_steps(self, source_length: int, options: DecodeOptions) -> int:
        if options.max_output_tokens > 0:
            return min(options.max_output_tokens, self.max_target_tokens)
        return min(self.max_target_tokens, int(source_length * self.output_ratio) + self.output_extra)

    # -- batch translation ---------------------------------------------------------------------------
    def __call__(
        self, items: Sequence[str | TranslationRequest], timings: StageTimings | None = None
    ) -> list[Translation]:
        timings = timings or StageTimings()
        requests = [i if isinstance(i, TranslationRequest) else TranslationRequest(i, self.defaults) for i in items]
        with timings.stage("tokenize"):
            encodings = self.tokenizer.encode_batch([r.text for r in requests], add_special_tokens=False)
            ids = [[*e.ids[: self.max_source_tokens - 1], self.runner.eos_id] for e in encodings]
        groups: dict[DecodeOptions, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.options, []).append(index)
        results: list[Translation | None] = [None] * len(requests)
        padded = 0
        runs = [([i], options) for options, indices in groups.items() for i in indices] if self.one_text_per_run \
            else [(indices, options) for options, indices in groups.items()]
        for indices, options in runs:
            src_ids, src_mask = self._pad([ids[i] for i in indices])
            padded += int(src_mask.size - src_mask.sum())
            steps = np.array([self.max_steps(len(ids[i]), options) for i in indices])
            with timings.stage("inference"):
                nbest = self._decode(src_ids, src_mask, steps, options)
            with timings.stage("postprocess"):
                for index, hypotheses in zip(indices, nbest, strict=True):
                    results[index] = self._translation(encodings[index].tokens, ids[index], hypotheses, options)
        total = sum(len(i) for i in ids)
        timings.padding_ratio = padded / max(1, padded + total)
        return [r for r in results if r is not None]

    def _decode(self, src_ids: np.ndarray, src_mask: np.ndarray, steps: np.ndarray,
                options: DecodeOptions) -> list[list[Hypothesis]]:
        # Beam 1 with one output is greedy by definition; the greedy loop is simpler and faster.
        if options.beam_size <= 1:
            return [[h] for h in greedy_search(self.runner, src_ids, src_mask, steps, options.length_penalty,
                                               options.alignment)]
        return beam_search(self.runner, src_ids, src_mask, steps, options.beam_size, options.n_best,
                           options.length_penalty, options.alignment)

    def _pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        src_ids = np.full((len(rows), width), self.runner.pad_id, dtype=np.int64)
        src_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            src_ids[i, : len(row)] = row
            src_mask[i, : len(row)] = 1
        return src_ids, src_mask

    def _translation(self, source_tokens: list[str], source_ids: list[int], hypotheses: list[Hypothesis],
                     options: DecodeOptions) -> Translation:
        outputs = [
            TranslatedHypothesis(
                text=self.tokenizer.decode(h.token_ids, skip_special_tokens=True), score=h.score,
                log_prob=h.log_prob, tokens=[self.tokenizer.id_to_token(t) or "" for t in h.token_ids],
            )
            for h in hypotheses
        ]
        alignment = None
        best = hypotheses[0]
        if options.alignment and best.attention is not None:
            columns = [*source_tokens[: len(source_ids) - 1], self.tokenizer.id_to_token(self.runner.eos_id) or "</s>"]
            alignment = Alignment(columns, outputs[0].tokens, best.attention[:, : len(source_ids)])
        return Translation(outputs, alignment, len(source_ids))

    # -- streaming -----------------------------------------------------------------------------------
    def stream(self, text: str, max_output_tokens: int = 0) -> Iterator[StreamPiece]:
        """Greedy output of one text, a subword at a time, with the text each one adds."""
        ids = self.source_ids(text)
        src_ids, src_mask = self._pad([ids])
        steps = self.max_steps(len(ids), DecodeOptions(max_output_tokens=max_output_tokens))
        produced: list[int] = []
        emitted = ""
        for token_id in greedy_stream(self.runner, src_ids, src_mask, steps):
            produced.append(token_id)
            # Decode the whole prefix, not the token alone: the decoder decides spacing from context.
            text = self.tokenizer.decode(produced, skip_special_tokens=True)
            delta = text[len(emitted):] if text.startswith(emitted) else text
            emitted = text
            yield StreamPiece(token=self.tokenizer.id_to_token(token_id) or "", text=delta)
