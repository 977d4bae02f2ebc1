"""RecommendRequest -> a validated RecommendationRequest, or INVALID_ARGUMENT naming the field and limit.

Every unknown or ambiguous history item is listed (up to MAX_LISTED) in one message, so a client can
fix its whole history in one round trip.
"""

from __future__ import annotations

import grpc
from seqserve.v1 import recommendation_pb2

from service.grpc.validation import RequestError
from service.pipelines.recommendation import RecommendationPipeline, RecommendationRequest

DEFAULT_K = 10
# History items a request may carry (the model reads only its max_history most recent ones).
MAX_REQUEST_HISTORY = 5000
MAX_LISTED = 20
MAX_ECHOED_CHARS = 80  # a listed title is cut here: error messages travel in a size-limited header


def _echo(title: str) -> str:
    return repr(title if len(title) <= MAX_ECHOED_CHARS else title[:MAX_ECHOED_CHARS] + "...")


def validate_k(request: recommendation_pb2.RecommendRequest, max_k: int) -> int:
    if not request.HasField("k"):
        return min(DEFAULT_K, max_k)
    if not 1 <= request.k <= max_k:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"k: {request.k} is out of range 1..{max_k}")
    return request.k


def resolve_history(request: recommendation_pb2.RecommendRequest, pipeline: RecommendationPipeline) -> tuple[int, ...]:
    if len(request.history) > MAX_REQUEST_HISTORY:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"history: {len(request.history)} items exceeds the limit of {MAX_REQUEST_HISTORY}")
    catalogue = pipeline.catalogue
    ids: list[int] = []
    problems: list[str] = []
    for index, entry in enumerate(request.history):
        kind = entry.WhichOneof("item")
        if kind == "id":
            if catalogue.knows(entry.id):
                ids.append(entry.id)
            else:
                problems.append(f"history[{index}] id {entry.id}")
        elif kind == "key":
            found = catalogue.match_key(entry.key)
            if found is None:
                problems.append(f"history[{index}] key {_echo(entry.key)}")
            else:
                ids.append(found)
        elif kind == "title":
            matches = catalogue.match_title(entry.title)
            if len(matches) == 1:
                ids.append(matches[0])
            elif matches:
                names = ", ".join(repr(catalogue.get(i).name) for i in matches[:5])
                problems.append(f"history[{index}] title {_echo(entry.title)} is ambiguous ({names})")
            else:
                problems.append(f"history[{index}] title {_echo(entry.title)}")
        else:
            problems.append(f"history[{index}] has no id, title or key")
    if problems:
        example = catalogue.get(catalogue.popular[0][0])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"history: unknown items: {'; '.join(problems[:MAX_LISTED])}{more} (ids are 1..{catalogue.num_items}; "
            f"titles and keys as in the catalogue, e.g. {example.name!r}, key {example.key!r})",
        )
    return tuple(ids)


def to_request(request: recommendation_pb2.RecommendRequest, pipeline: RecommendationPipeline) -> RecommendationRequest:
    """Checked in field order: history, then k."""
    history = resolve_history(request, pipeline)
    return RecommendationRequest(history=history, k=validate_k(request, pipeline.max_k),
                                 exclude_seen=request.exclude_seen)
