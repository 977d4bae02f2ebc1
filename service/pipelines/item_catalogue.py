"""The items a recommendation model knows: ids, keys, names, titles, years, genres and training popularity.

Shipped in the model's version folder (items.json, popularity.json; checksummed by the manifest), so
ids always mean what they meant at training. Title lookup ignores case and surrounding spaces and
accepts the full name ("Toy Story (1995)") or, when only one item has it, the title without the year.

`id` is the graph's dense index (1..N; 0 pads). `key` is the item's own id in the data it was trained
on ("sku-0042"), matched exactly: a catalogue written by `python -m training.train recommendation`
stores it per item; one without keys (the committed MovieLens models) has the id in decimal as its key,
so "1" finds the item id 1 finds.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogueItem:
    id: int
    key: str  # the item's own id, matched exactly (the id in decimal when the catalogue has none)
    name: str  # the full name, unique in ML-1M: "Toy Story (1995)"
    title: str  # without the year: "Toy Story"
    year: int  # 0 when unknown
    genres: tuple[str, ...]


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


class ItemCatalogue:
    def __init__(self, items: list[CatalogueItem], interaction_counts: list[int]) -> None:
        if [item.id for item in items] != list(range(1, len(items) + 1)):
            raise ValueError("catalogue ids must be 1..N in order")
        if len(interaction_counts) != len(items) + 1:
            raise ValueError(f"popularity has {len(interaction_counts)} counts for {len(items)} items (+ padding)")
        self.items = items
        self.counts = interaction_counts
        self._by_key = {item.key: item.id for item in items}
        if len(self._by_key) != len(items):
            raise ValueError("catalogue keys must be unique")
        self._by_name: dict[str, list[int]] = defaultdict(list)
        self._by_title: dict[str, list[int]] = defaultdict(list)
        for item in items:
            self._by_name[_normal(item.name)].append(item.id)
            self._by_title[_normal(item.title)].append(item.id)
        total = sum(interaction_counts)
        # Most interacted first; ties by id, so the fallback is deterministic.
        ranked = sorted(range(1, len(items) + 1), key=lambda i: (-interaction_counts[i], i))
        self.popular = [(item_id, interaction_counts[item_id] / total if total else 0.0) for item_id in ranked]

    @classmethod
    def from_files(cls, items_path: pathlib.Path, popularity_path: pathlib.Path) -> ItemCatalogue:
        rows = json.loads(items_path.read_text("utf-8"))["items"]
        items = [CatalogueItem(int(r["id"]), str(r.get("key", r["id"])), str(r["name"]), str(r["title"]),
                               int(r["year"]), tuple(r["genres"])) for r in rows]
        counts = [int(c) for c in json.loads(popularity_path.read_text("utf-8"))["interaction_counts"]]
        return cls(items, counts)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def get(self, item_id: int) -> CatalogueItem:
        return self.items[item_id - 1]

    def knows(self, item_id: int) -> bool:
        return 1 <= item_id <= len(self.items)

    def match_key(self, key: str) -> int | None:
        """The id of the item whose key is exactly `key` (case and spaces count: keys are ids), else None."""
        return self._by_key.get(key)

    def match_title(self, title: str) -> list[int]:
        """Ids whose full name matches, else whose title without the year matches (several = ambiguous)."""
        key = _normal(title)
        return list(self._by_name.get(key) or self._by_title.get(key) or [])
