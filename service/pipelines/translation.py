"""Translation: tokenize -> encoder graph once -> greedy or beam search over the decoder-step graph.

Generic over docs/translation-graphs.md: everything model-specific comes from the manifest's
`decoding` section, so the Transformer and the GRU seq2seq model run through this same code. The
server (through the batcher) and training/evaluate/translation.py both call `TranslationPipeline`.

The batcher merges calls, and calls may ask for different decoding options, so the pipeline takes
`TranslationRequest`s (text + options; a bare string means the model's defaults) and decodes each
group of equal options as one batch. A dynamically quantized model (int8 made by quantize_dynamic)
computes its activation scales over the whole batch tensor, so it is handed one text per call
(service/batching/runs.py; its beams still share one run): a text's translation must not depend on
the texts it was batched with.

Bounded work (issue #16): each group decodes in chunks of consecutive texts whose estimated working
memory (`DecodeFootprint`, measured on the model's own graphs) stays within `chunk_bytes`, so a batch's
peak memory does not grow with how many texts or calls were merged into it. Chunks are cut from the
group's padded tensors, so every text decodes from the same inputs as unchunked (outputs bit for bit
equal, tested). `stops` (one callable per item, from the batcher) ends a cancelled or expired call's
decoding at the next step and skips its later chunks; `between_chunks` lets the batcher run other
calls between two chunks. Evaluation passes neither.

Confidence (issue #19): for a model whose manifest has `decoding.confidence`, every translation (and a
stream's last piece) carries a calibrated confidence in [0, 1] computed from its best hypothesis
(translation_confidence.py). Its features need the cross-attention, so such a model decodes with the
attention kept (as for an alignment, which the chunk sizes count); the tokens are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from service.model.loaded_model import LoadedModel
from service.model.pipeline import ScheduledPipeline, Stop
from service.model.timing import StageTimings
from service.pipelines.beam_search import BeamSearch
from service.pipelines.greedy import GreedySearch, greedy_stream_steps
from service.pipelines.hypothesis import Hypothesis
from service.pipelines.output_constraints import OutputConstraints
from service.pipelines.seq2seq_runtime import StepRunner
from service.pipelines.translation_confidence import (
    COVERAGE_THRESHOLD,
    ConfidenceInputs,
    ConfidenceModel,
    confidence_features,
    unknown_token_ids,
)

TASK = "translation"
MAX_BEAM_SIZE = 16  # beyond this, quality stops improving and a request could take seconds per text
MIB = 1 << 20
# Estimated working memory of one decoding chunk; docs/reliability.md "Translation cost and cancellation"
# has the measured peak RSS it gives. One text is never split, so a chunk holds at least one text.
DECODE_CHUNK_BYTES = 64 * MIB


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
    confidence: float | None = None         # in [0, 1]; None: the model has no confidence section
    features: dict[str, float] | None = None  # what the confidence is computed from (evaluation reads them)


@dataclass(frozen=True)
class StreamPiece:
    token: str   # the subword produced
    text: str    # the characters it adds to the translation so far (may be "")
    confidence: float | None = None  # on the last piece only, for a model with a confidence section


@dataclass(frozen=True)
class DecodeFootprint:
    """Bytes one decoder row (a text, or one beam of it) holds, measured by `measure_footprint`."""

    per_source_token: int   # encoder memory (cross-attention keys/values, GRU states) per source position
    per_step: int           # decoder state growth per output token (a Transformer's self-attention cache)
    fixed: int              # state that does not grow
    vocab: int              # log-probs per step

    def row_bytes(self, source_width: int, steps: int, alignment: bool) -> int:
        """Peak bytes of one row near its last step. Memory counts twice (np.take copies it when a
        sentence leaves), state three times (fed, returned by onnxruntime, reordered), log-probs three
        times (scores, candidate sums, selection), the attention history twice (live, finished)."""
        memory = self.per_source_token * source_width
        state = self.fixed + self.per_step * steps
        attention = 4 * source_width * steps if alignment else 0
        return 2 * memory + 3 * state + 3 * 4 * self.vocab + 2 * attention


def measure_footprint(runner: StepRunner) -> DecodeFootprint:
    """Run the graphs on one row of 1 and 2 source tokens for 1 and 2 steps and read the tensor sizes:
    generic over architectures (docs/translation-graphs.md), nothing assumed about shapes."""
    def sizes(width: int, steps: int) -> tuple[int, int, int]:
        src = np.full((1, width), runner.eos_id, dtype=np.int64)
        state = runner.encode(src, np.ones_like(src))
        log_probs = np.zeros((1, 0), dtype=np.float32)
        for _ in range(steps):
            log_probs, _, state = runner.step(np.full(1, runner.bos_id, dtype=np.int64), state)
        memory = sum(v.nbytes for v in state.memory.values())
        return memory, sum(v.nbytes for v in state.state.values()), int(log_probs.shape[1])

    memory_1, state_1, vocab = sizes(1, 1)
    memory_2, state_w2, _ = sizes(2, 1)
    _, state_s2, _ = sizes(1, 2)
    per_source = max(0, memory_2 + state_w2 - memory_1 - state_1)
    per_step = max(0, state_s2 - state_1)
    return DecodeFootprint(per_source_token=per_source, per_step=per_step,
                           fixed=max(0, memory_1 + state_1 - per_source - per_step), vocab=vocab)


def nbest_of(search: GreedySearch | BeamSearch) -> list[list[Hypothesis]]:
    """Each row's hypotheses, best first, from a search run to its end (greedy: the one it has)."""
    if isinstance(search, GreedySearch):
        return [[h] for h in search.results()]
    return search.results()


def run_to_end(search: GreedySearch | BeamSearch) -> list[list[Hypothesis]]:
    """A search advanced until it is finished, as batch-at-a-time decoding runs it: its n-best lists."""
    while not search.finished:
        search.advance()
    return nbest_of(search)


@dataclass(frozen=True)
class _UnitText:
    index: int                 # position in the planned batch
    text: str
    source_tokens: list[str]   # its subwords
    source_ids: list[int]      # with the source prefix and [EOS]


class DecodeUnit:
    """A chunk: consecutive texts of one options group that decode as one search (a StepWork for the
    step scheduler; __call__ runs its units one after the other). The rows are cut from the group's
    padded tensors, so a text decodes from the same inputs however the batch is chunked or scheduled."""

    def __init__(self, pipeline: TranslationPipeline, texts: list[_UnitText], src_ids: np.ndarray,
                 src_mask: np.ndarray, steps: np.ndarray, options: DecodeOptions, cost: int) -> None:
        self.pipeline, self.texts, self.options = pipeline, texts, options
        self.src_ids, self.src_mask, self.steps = src_ids, src_mask, steps
        self.items: Sequence[int] = [t.index for t in texts]
        self.bytes = cost
        self._live: list[_UnitText] = []
        self._stops: list[Stop] | None = None
        self._search: GreedySearch | BeamSearch | None = None

    def start(self, stops: Sequence[Stop] | None) -> bool:
        """Build the search over the texts whose call has not gone (by planned position); False if none."""
        live = [p for p, t in enumerate(self.texts) if stops is None or not stops[t.index]()]
        if not live:
            return False
        rows = np.asarray(live, dtype=np.int64)
        self._live = [self.texts[p] for p in live]
        self._stops = None if stops is None else [stops[t.index] for t in self._live]
        self._search = self.pipeline.search(self.src_ids[rows], self.src_mask[rows], self.steps[rows], self.options,
                                            self._stops)
        return True

    @property
    def finished(self) -> bool:
        return self._search is None or self._search.finished

    def advance(self) -> None:
        if self._search is not None:
            self._search.advance()

    def results(self) -> dict[int, Translation]:
        """The translations of the texts decoded to the end (a text stopped mid-way has none). Read once:
        the search and its decoder state are let go here, so a batch's finished chunks hold no memory while
        its later chunks decode (kept, a 16-text beam-16 call peaked at 1,013 MiB instead of ~400)."""
        if self._search is None:
            return {}
        nbest = nbest_of(self._search)
        self._search = None
        results = {}
        for position, (text, hypotheses) in enumerate(zip(self._live, nbest, strict=True)):
            if self._stops is not None and self._stops[position]():
                continue  # stopped mid-way: a partial result nobody will read
            results[text.index] = self.pipeline.translation(text.text, text.source_tokens, text.source_ids,
                                                            hypotheses, self.options)
        return results


class TranslationPipeline(ScheduledPipeline[TranslationRequest, Translation]):
    # The batcher hands this pipeline per-item stop signals and a between-chunks hook, and (iteration-level
    # scheduling, the default) runs its planned units interleaved step by step with other batches'.
    takes_stop_signals = True
    schedules_steps = True

    def __init__(self, model: LoadedModel, chunk_bytes: int = DECODE_CHUNK_BYTES, features: bool = False) -> None:
        """`features`: compute the confidence features even without a confidence section (calibration)."""
        if model.task != TASK or model.tokenizer is None:
            raise ValueError(f"model {model.name} is not a translation model with a tokenizer")
        self.model = model
        self.tokenizer = model.tokenizer
        self.runner = StepRunner(model)
        decoding = model.manifest.spec.decoding
        if decoding is None:
            raise ValueError(f"model {model.name} has no decoding section")
        self.max_source_tokens = decoding.max_source_tokens
        # Ids around a source's subwords: the manifest's prefix (an imported BART's <s>), then [EOS].
        self.source_prefix = list(decoding.source_prefix_ids)
        self.added_source_tokens = len(self.source_prefix) + 1
        self.max_target_tokens = decoding.max_target_tokens
        self.output_ratio = decoding.max_output_ratio
        self.output_extra = decoding.max_output_extra
        self.defaults = DecodeOptions(beam_size=decoding.defaults.beam_size,
                                      length_penalty=decoding.defaults.length_penalty)
        self.constraints = OutputConstraints(min_tokens=decoding.min_output_tokens,
                                             max_loop_ngram=decoding.max_loop_ngram)
        self.chunk_bytes = chunk_bytes
        self.confidence = None if decoding.confidence is None else ConfidenceModel.from_section(decoding.confidence)
        self.with_features = features or self.confidence is not None
        self.coverage_threshold = COVERAGE_THRESHOLD if self.confidence is None else self.confidence.coverage_threshold
        special = model.manifest.spec.special_tokens
        self.unknown_ids = unknown_token_ids(self.tokenizer.get_vocab(), None if special is None else special.unk_id)
        self.footprint = measure_footprint(self.runner)

    # -- sizes, shared with request validation ---------------------------------------------------------
    def source_ids(self, text: str) -> list[int]:
        """As in training: subword ids then [EOS], cut to max_source_tokens (validation refuses longer)."""
        return self._with_special_ids(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _with_special_ids(self, ids: Sequence[int]) -> list[int]:
        return [*self.source_prefix, *ids[: self.max_source_tokens - self.added_source_tokens], self.runner.eos_id]

    def estimate_tokens(self, item: str | TranslationRequest) -> int:
        text = item.text if isinstance(item, TranslationRequest) else item
        return min(self.max_source_tokens, len(text) // 4 + 1)

    def max_steps(self, source_length: int, options: DecodeOptions) -> int:
        if options.max_output_tokens > 0:
            return min(options.max_output_tokens, self.max_target_tokens)
        return min(self.max_target_tokens, int(source_length * self.output_ratio) + self.output_extra)

    # -- batch translation ---------------------------------------------------------------------------
    def __call__(
        self, items: Sequence[str | TranslationRequest], timings: StageTimings | None = None,
        stops: Sequence[Stop] | None = None, between_chunks: Callable[[], None] | None = None,
    ) -> list[Translation | None]:
        """One Translation per item, in order; None only for an item whose stop signal fired."""
        timings = timings or StageTimings()
        results: list[Translation | None] = [None] * len(items)
        for number, unit in enumerate(self._plan_run(items, 0, timings)):
            if between_chunks is not None and number:
                between_chunks()
            # Texts whose call has gone are not decoded at all.
            if not unit.start(stops):
                continue
            with timings.stage("inference"):
                while not unit.finished:
                    unit.advance()
            with timings.stage("postprocess"):
                for index, translation in unit.results().items():
                    results[index] = translation
        return results

    def plan(self, items: Sequence[str | TranslationRequest], items_per_run: int,
             timings: StageTimings | None = None) -> list[DecodeUnit]:
        """The step scheduler's view of a batch: the chunks __call__ would decode, for runs of at most
        `items_per_run` consecutive items (0: one run; service/batching/runs.py), in __call__'s order.
        Each unit decodes exactly what __call__ decodes for its texts (the same padded tensors, the same
        search), so scheduled outputs are bit for bit the batch-at-a-time ones."""
        timings = timings if timings is not None else StageTimings()
        size = items_per_run if items_per_run > 0 else max(1, len(items))
        units: list[DecodeUnit] = []
        ratios = []
        for start in range(0, len(items), size):
            units.extend(self._plan_run(items[start : start + size], start, timings))
            if timings.padding_ratio is not None:
                ratios.append(timings.padding_ratio)
        timings.padding_ratio = sum(ratios) / len(ratios) if ratios else None  # as run_in_runs: their mean
        return units

    def _plan_run(self, items: Sequence[str | TranslationRequest], offset: int,
                  timings: StageTimings) -> list[DecodeUnit]:
        """One pipeline run's units: tokenize, group by options, pad each group, cut it into chunks.
        `offset`: the position of items[0] in the planned batch (the units' item positions count from it)."""
        requests = [i if isinstance(i, TranslationRequest) else TranslationRequest(i, self.defaults) for i in items]
        with timings.stage("tokenize"):
            encodings = self.tokenizer.encode_batch([r.text for r in requests], add_special_tokens=False)
            ids = [self._with_special_ids(e.ids) for e in encodings]
        groups: dict[DecodeOptions, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.options, []).append(index)
        units = []
        padded = 0
        for options, indices in groups.items():
            src_ids, src_mask = self._pad([ids[i] for i in indices])
            padded += int(src_mask.size - src_mask.sum())
            steps = np.array([self.max_steps(len(ids[i]), options) for i in indices])
            for chunk in self.chunks(src_ids.shape[1], steps, options):
                texts = [_UnitText(offset + indices[p], requests[indices[p]].text, encodings[indices[p]].tokens,
                                   ids[indices[p]]) for p in chunk]
                rows = np.asarray(chunk, dtype=np.int64)
                cost = sum(self.text_bytes(src_ids.shape[1], int(steps[p]), options) for p in chunk)
                units.append(DecodeUnit(self, texts, src_ids[rows], src_mask[rows], steps[rows], options, cost))
        total = sum(len(i) for i in ids)
        timings.padding_ratio = padded / max(1, padded + total)
        return units

    def text_bytes(self, source_width: int, steps: int, options: DecodeOptions) -> int:
        """Estimated working memory of one text (all its beams) near its last step."""
        return max(1, options.beam_size) * self.footprint.row_bytes(source_width, steps, self._keeps_attention(options))

    def chunks(self, source_width: int, steps: np.ndarray, options: DecodeOptions) -> list[list[int]]:
        """Positions of consecutive texts, cut so each chunk's estimated bytes stay within chunk_bytes
        (a text alone may exceed it: its beams decode together)."""
        chunks: list[list[int]] = [[]]
        used = 0
        for position, text_steps in enumerate(steps):
            cost = self.text_bytes(source_width, int(text_steps), options)
            if chunks[-1] and used + cost > self.chunk_bytes:
                chunks.append([])
                used = 0
            chunks[-1].append(position)
            used += cost
        return chunks

    def search(self, src_ids: np.ndarray, src_mask: np.ndarray, steps: np.ndarray, options: DecodeOptions,
               stops: Sequence[Stop] | None) -> GreedySearch | BeamSearch:
        """The search that decodes these rows with these options, not yet run (its first advance encodes)."""
        # Beam 1 with one output is greedy by definition; the greedy loop is simpler and faster.
        if options.beam_size <= 1:
            return GreedySearch(self.runner, src_ids, src_mask, steps, options.length_penalty,
                                self._keeps_attention(options), stops, self.constraints)
        return BeamSearch(self.runner, src_ids, src_mask, steps, options.beam_size, options.n_best,
                          options.length_penalty, self._keeps_attention(options), stops, self.constraints)

    def _keeps_attention(self, options: DecodeOptions) -> bool:
        return options.alignment or self.with_features

    def _pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        src_ids = np.full((len(rows), width), self.runner.pad_id, dtype=np.int64)
        src_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            src_ids[i, : len(row)] = row
            src_mask[i, : len(row)] = 1
        return src_ids, src_mask

    def translation(self, text: str, source_tokens: list[str], source_ids: list[int], hypotheses: list[Hypothesis],
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
            prefix = [self.tokenizer.id_to_token(i) or "" for i in self.source_prefix]
            columns = [*prefix, *source_tokens[: len(source_ids) - self.added_source_tokens],
                       self.tokenizer.id_to_token(self.runner.eos_id) or "</s>"]
            alignment = Alignment(columns, outputs[0].tokens, best.attention[:, : len(source_ids)])
        features = confidence = None
        if self.with_features and best.attention is not None:
            features, confidence = self._confidence(ConfidenceInputs(
                text, source_ids, best.token_ids, best.token_log_probs, best.attention))
        return Translation(outputs, alignment, len(source_ids), confidence, features)

    def _confidence(self, inputs: ConfidenceInputs) -> tuple[dict[str, float], float | None]:
        features = confidence_features(inputs, self.unknown_ids, self.coverage_threshold)
        return features, None if self.confidence is None else self.confidence.score(features)

    # -- streaming -----------------------------------------------------------------------------------
    def stream(self, text: str, max_output_tokens: int = 0) -> Iterator[StreamPiece]:
        """Greedy output of one text, a subword at a time, with the text each one adds.

        With a confidence section each piece is held back one decoder step (~2 ms), so the last piece,
        known only once the next step ends the output, can carry the translation's confidence. An
        output of no tokens has no piece, so no confidence either."""
        ids = self.source_ids(text)
        src_ids, src_mask = self._pad([ids])
        steps = self.max_steps(len(ids), DecodeOptions(max_output_tokens=max_output_tokens))
        produced: list[int] = []
        log_probs: list[float] = []
        attention: list[np.ndarray] = []
        emitted = ""
        pending: StreamPiece | None = None
        for step in greedy_stream_steps(self.runner, src_ids, src_mask, steps, self.constraints):
            log_probs.append(step.log_prob)
            if step.token_id == self.runner.eos_id:
                break
            produced.append(step.token_id)
            attention.append(step.attention)
            # Decode the whole prefix, not the token alone: the decoder decides spacing from context.
            decoded = self.tokenizer.decode(produced, skip_special_tokens=True)
            delta = decoded[len(emitted):] if decoded.startswith(emitted) else decoded
            emitted = decoded
            piece = StreamPiece(token=self.tokenizer.id_to_token(step.token_id) or "", text=delta)
            if self.confidence is None:
                yield piece
                continue
            if pending is not None:
                yield pending
            pending = piece
        if pending is not None:
            _, confidence = self._confidence(ConfidenceInputs(text, ids, produced, log_probs, np.stack(attention)))
            yield replace(pending, confidence=confidence)
