"""The one top-k loop both stores use: tie-safe cuts and one-per-label grouping.

A backend ranks candidates best first (ties in a fixed order of its own: insertion order) and
says whether it ranked every item that can pass. The loop asks for k + 1 candidates (grouping:
max(4k, 32)), picks, and widens (x2; grouping x4) until the k-th pick scores strictly above the
last candidate, or nothing is left to rank: so a cut never splits a tie arbitrarily, and
grouping returns k groups whenever k exist (an item without the label is a group of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Candidate", "Fetch", "pick", "top_k"]


@dataclass(frozen=True, slots=True)
class Candidate:
    score: float
    key: Hashable  # the backend's id of the item (rowid, item id)
    label: str | None = None  # identity or track when grouping
    payload: Any = None  # whatever the backend needs to build the hit


#: ``fetch(window)``: the best ``window`` candidates, sorted, and whether no more exist.
Fetch = Callable[[int], tuple[Sequence[Candidate], bool]]


def pick(ranked: Sequence[Candidate], k: int, grouped: bool) -> list[Candidate]:
    """The first k candidates, or with ``grouped`` the first of each label until k."""
    if not grouped:
        return list(ranked[:k])
    chosen: list[Candidate] = []
    seen: set[tuple[str, Hashable]] = set()
    for c in ranked:
        group = ("item", c.key) if c.label is None else ("label", c.label)
        if group not in seen:
            seen.add(group)
            chosen.append(c)
            if len(chosen) == k:
                break
    return chosen


def top_k(fetch: Fetch, k: int, grouped: bool) -> list[Candidate]:
    """The top k (or the best of k groups), widening the window until the cut is safe."""
    window = max(4 * k, 32) if grouped else k + 1
    while True:
        ranked, exhausted = fetch(window)
        chosen = pick(ranked, k, grouped)
        if exhausted or not ranked:
            return chosen
        if len(chosen) == k and chosen[-1].score > ranked[-1].score:
            return chosen
        window *= 4 if grouped else 2
