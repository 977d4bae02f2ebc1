"""Request validation: every bad input becomes a RequestError with a gRPC status code and a message
that names the field, the index and the limit, so a client can fix its call without reading logs.

Messages are built only from the request, the limits and model names (ModelNotFoundError's text),
never from arbitrary exceptions, so they cannot leak stack traces or server file paths.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from service.model.loaded_model import LoadedModel
from service.registry.registry import ModelNotFoundError, ModelRegistry

# Model names are short; a longer one is refused before it is echoed into a NOT_FOUND message, which
# travels in a response header that gRPC caps at a few kilobytes.
MAX_MODEL_NAME_CHARS = 200


class RequestError(Exception):
    """A call the server refuses, with the status code and message the client will see."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TextLimits:
    max_texts: int
    max_text_chars: int


# Unicode categories that show nothing: separators (spaces), controls (NUL...), format characters
# (zero-width space and joiner, byte-order mark, direction marks), unassigned and surrogate code points.
_INVISIBLE = ("Z", "Cc", "Cf", "Cn", "Cs")


def has_visible_content(text: str) -> bool:
    return any(not unicodedata.category(c).startswith(_INVISIBLE) for c in text)


def validate_texts(texts: Sequence[str], limits: TextLimits) -> None:
    """Raise INVALID_ARGUMENT for the first problem found, in field order."""
    if not texts:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "texts: must hold at least 1 text")
    if len(texts) > limits.max_texts:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"texts: {len(texts)} texts exceeds the limit of {limits.max_texts}",
        )
    for index, text in enumerate(texts):
        # A blank text has nothing to classify; answering it would return the model's prior as if
        # it were a judgement, so it is refused rather than scored. Blank includes invisible characters:
        # a zero-width space, a byte-order mark or a NUL became one [UNK] token and got the prior.
        if not has_visible_content(text):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"texts[{index}]: is empty")
        # Characters are Unicode code points (len of the decoded string), not UTF-8 bytes.
        if len(text) > limits.max_text_chars:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"texts[{index}]: {len(text)} characters exceeds the limit of {limits.max_text_chars}",
            )


def resolve_model(repository: ModelRegistry, task: str, name: str) -> LoadedModel:
    """The named model (or the task's default for an empty name), else NOT_FOUND."""
    if len(name) > MAX_MODEL_NAME_CHARS:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model: {len(name)} characters exceeds the limit of {MAX_MODEL_NAME_CHARS}",
        )
    try:
        return repository.get(task, name)
    except ModelNotFoundError as exc:
        # The repository's message names the model and lists the loaded ones; it holds no paths.
        raise RequestError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
