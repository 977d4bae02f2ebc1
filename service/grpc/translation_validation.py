"""Translation request checks: texts (count, characters, source tokens), decoding options and cost.

Each refusal names the field and the limit, like service/grpc/validation.py. Limits that belong to
the model (source/target tokens) come from its manifest's `decoding` section. The cost of a call is
the decoder work it may ask for, texts x beam x output tokens (issue #16: 64 texts x beam 16 x 256
tokens, each within its own limit, decoded for a minute and took 3.8 GiB); a call over the server's
--max-translate-cost is refused RESOURCE_EXHAUSTED before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc
from seqserve.v1 import translation_pb2

from service.grpc.validation import RequestError, TextLimits, validate_texts
from service.pipelines.translation import MAX_BEAM_SIZE, DecodeOptions, TranslationPipeline

MAX_LENGTH_PENALTY = 2.0


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def validate_source_tokens(texts: Sequence[str], pipeline: TranslationPipeline, field: str = "texts") -> list[int]:
    """Refuse a text whose subwords (+ end of sentence and any manifest source prefix) exceed the model's
    max_source_tokens; else return each text's source token count."""
    encodings = pipeline.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    counts = []
    for index, encoding in enumerate(encodings):
        count = len(encoding.ids) + pipeline.added_source_tokens
        if count > pipeline.max_source_tokens:
            name = f"{field}[{index}]" if field == "texts" else field
            raise _invalid(f"{name}: {count} source tokens exceeds the limit of {pipeline.max_source_tokens}")
        counts.append(count)
    return counts


def validate_cost(source_tokens: Sequence[int], options: DecodeOptions, pipeline: TranslationPipeline,
                  limit: int) -> int:
    """The call's cost (beam size x the output tokens each text may take, summed over texts), or
    RESOURCE_EXHAUSTED naming the values and the limit when it exceeds `limit`."""
    output_tokens = sum(pipeline.max_steps(count, options) for count in source_tokens)
    cost = options.beam_size * output_tokens
    if cost > limit:
        asked = options.max_output_tokens or "0: from each source length"
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, (
            f"texts x options.beam_size x output tokens: {len(source_tokens)} texts x {options.beam_size} beams x "
            f"{output_tokens} output tokens in all (options.max_output_tokens {asked}) = {cost} exceeds the limit "
            f"of {limit} per call; send fewer texts, a smaller beam_size or a lower max_output_tokens"))
    return cost


def validate_max_output(value: int, pipeline: TranslationPipeline, field: str) -> None:
    if value > pipeline.max_target_tokens:
        raise _invalid(f"{field}: {value} exceeds the limit of {pipeline.max_target_tokens}")


def decode_options(options: translation_pb2.DecodingOptions, pipeline: TranslationPipeline) -> DecodeOptions:
    """The request's options with the model's defaults filled in, or INVALID_ARGUMENT."""
    beam_size = options.beam_size or pipeline.defaults.beam_size
    if beam_size > MAX_BEAM_SIZE:
        raise _invalid(f"options.beam_size: {beam_size} exceeds the limit of {MAX_BEAM_SIZE}")
    n_best = options.n_best or 1
    if n_best > beam_size:
        raise _invalid(f"options.n_best: {n_best} exceeds options.beam_size ({beam_size})")
    alpha = options.length_penalty if options.HasField("length_penalty") else pipeline.defaults.length_penalty
    if not (math.isfinite(alpha) and 0.0 <= alpha <= MAX_LENGTH_PENALTY):
        raise _invalid(f"options.length_penalty: {alpha} is outside [0, {MAX_LENGTH_PENALTY}]")
    validate_max_output(options.max_output_tokens, pipeline, "options.max_output_tokens")
    return DecodeOptions(beam_size=beam_size, length_penalty=float(alpha), max_output_tokens=options.max_output_tokens,
                         n_best=n_best, alignment=options.return_alignment)


def validate_translate(request: translation_pb2.TranslateRequest, limits: TextLimits,
                       pipeline: TranslationPipeline, max_cost: int) -> tuple[DecodeOptions, list[int]]:
    """The call's options and its texts' source token counts, or the first refusal."""
    texts = list(request.texts)
    validate_texts(texts, limits)
    counts = validate_source_tokens(texts, pipeline)
    options = decode_options(request.options, pipeline)
    validate_cost(counts, options, pipeline, max_cost)
    return options, counts


def validate_stream(request: translation_pb2.TranslateStreamRequest, limits: TextLimits,
                    pipeline: TranslationPipeline) -> None:
    if not request.text.strip():
        raise _invalid("text: is empty")
    if len(request.text) > limits.max_text_chars:
        raise _invalid(f"text: {len(request.text)} characters exceeds the limit of {limits.max_text_chars}")
    validate_source_tokens([request.text], pipeline, field="text")
    validate_max_output(request.max_output_tokens, pipeline, "max_output_tokens")
