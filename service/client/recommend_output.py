"""`seqserve recommend`: history arguments in, a readable list of titles out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from seqserve.v1 import recommendation_pb2

BAR_WIDTH = 20


def parse_history(arguments: Sequence[str]) -> list[recommendation_pb2.HistoryItem]:
    """`#123` is catalogue id 123, `@sku-0042` the item whose key (own id) is sku-0042; anything else a title."""
    return [recommendation_pb2.HistoryItem(id=int(a[1:])) if a.startswith("#") and a[1:].isdigit()
            else recommendation_pb2.HistoryItem(key=a[1:]) if a.startswith("@") and len(a) > 1
            else recommendation_pb2.HistoryItem(title=a) for a in arguments]


def item_reference(item: recommendation_pb2.Item) -> str:
    """How to name the item on the command line again: `#id`, or `@key` when its key is not the id."""
    return f"#{item.id}" if item.key in ("", str(item.id)) else f"@{item.key}"


def _label(item: recommendation_pb2.Item) -> str:
    return item.name or item.title


def print_recommendations(response: recommendation_pb2.RecommendResponse, requested: int, out: TextIO) -> None:
    if response.fallback:
        print(f"history empty: the {len(response.items)} most popular items (fallback, no model ran)", file=out)
    else:
        note = ""
        if response.truncated and response.whole_history_scored:
            note = (f", all scored through item co-occurrence, the most recent {response.history_used} also by "
                    f"self-attention (max {response.max_history})")
        elif response.truncated:
            note = f", only the most recent {response.history_used} were used (max {response.max_history})"
        # No weights when asked without them (--no-attention).
        over = "; attention of the last item over it:" if response.attention else ""
        print(f"history: {requested} items{note}{over}", file=out)
        for weight in response.attention:
            bar = "#" * round(weight.weight * BAR_WIDTH)
            print(f"  {weight.weight:5.2f} {bar:<{BAR_WIDTH}} {_label(weight.item)}", file=out)
    print("recommended:", file=out)
    # Column widths from the rows themselves, so scores line up however long a title or genre list is.
    width = max((len(_label(r.item)) for r in response.items), default=0)
    genre_width = max((len("|".join(r.item.genres)) for r in response.items), default=0)
    for rank, recommended in enumerate(response.items, start=1):
        genres = "|".join(recommended.item.genres)
        # A fallback's score is the item's share of the training interactions, not a model score.
        score = (f"{recommended.score:.2%} of ratings" if response.fallback else f"score {recommended.score:.3f}")
        print(f"  {rank:>3}. {_label(recommended.item):<{width}}  {genres:<{genre_width}}  {score}"
              f"  {item_reference(recommended.item)}", file=out)
    print(f"model {response.model.name} version {response.model.version}", file=out)
