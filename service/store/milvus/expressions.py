"""Milvus boolean expressions for the store's filters, with user text escaped.

Filters are boolean expressions over the scalar fields (``gallery == "g" and camera_id in
[...] and ts >= 1714521600.0 ...``); Milvus applies them before the vector search, so with a
FLAT index the result is exactly the top k of the items that pass. User text only ever appears
inside a double-quoted string literal, escaped by ``literal`` (backslash, double quote, CR, LF,
TAB: the escapes both Milvus's expression parser and Milvus Lite's accept). pymilvus's
``filter_params`` templating would be the alternative, but Milvus Lite 3.2 does not implement
it, so it could not be tested here; and pymilvus's own ``get(ids=...)`` does not escape string
keys, so the store never passes user ids through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..base import ITEM_ID, SearchFilter, Selection, StoreError

__all__ = ["filter_expression", "literal", "number", "selection_expression", "string_list"]


def literal(text: str) -> str:
    """``text`` as a double-quoted Milvus string literal: the only place user text goes."""
    if not isinstance(text, str):
        raise StoreError(f"expected a string, not {type(text).__name__}")
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def number(value: float) -> str:
    """A float literal that parses back to exactly ``value`` (no exponent notation)."""
    if not math.isfinite(value):
        raise StoreError(f"not a finite number: {value!r}")
    text = repr(float(value))
    return text if "e" not in text else f"{value:.30f}"


def string_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]"


def filter_expression(gallery: str, where: SearchFilter | None) -> str | None:
    """The Milvus boolean expression for ``where`` within ``gallery``; None: nothing can pass."""
    w = where or SearchFilter()
    parts = [f"gallery == {literal(gallery)}"]
    if w.cameras is not None:
        if not w.cameras:
            return None
        parts.append(f"camera_id in {string_list(sorted(w.cameras))}")
    if w.exclude_cameras:
        parts.append(f"camera_id not in {string_list(sorted(w.exclude_cameras))}")
    if w.since is not None:
        parts.append(f"ts >= {number(w.since.timestamp())}")
    if w.until is not None:
        parts.append(f"ts <= {number(w.until.timestamp())}")
    if w.exclude_item is not None and ITEM_ID.fullmatch(w.exclude_item):
        parts.append(f"item_id != {literal(w.exclude_item)}")  # other text matches no item
    if w.exclude_track is not None:
        parts.append(f"track_id != {literal(w.exclude_track)}")  # no track is stored as ""
    return " and ".join(parts)


def selection_expression(sel: Selection) -> str:
    """The Milvus boolean expression for items to remove ("" for every item)."""
    parts = []
    if sel.gallery is not None:
        parts.append(f"gallery == {literal(sel.gallery)}")
    if sel.camera_id is not None:
        parts.append(f"camera_id == {literal(sel.camera_id)}")
    if sel.track_id is not None:
        parts.append(f"track_id == {literal(sel.track_id)}")
    if sel.since is not None:
        parts.append(f"ts >= {number(sel.since.timestamp())}")
    if sel.before is not None:
        parts.append(f"ts < {number(sel.before.timestamp())}")
    return " and ".join(parts)
