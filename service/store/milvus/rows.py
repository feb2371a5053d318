"""Items to Milvus rows and back (the fields are described in ``collection.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from ..base import Item, NewItem

__all__ = ["item_of", "row_of"]


def row_of(
    it: NewItem,
    item_id: str,
    gallery: str,
    embedding: np.ndarray,
    crop: str,
    created: datetime,
    seq: int,
    provenance: bool = True,
) -> dict[str, Any]:
    """The row one validated item is stored as (absent labels as ""); ``provenance``: the
    collection has the provenance fields."""
    row = {
        "item_id": item_id,
        "gallery": gallery,
        "embedding": embedding,
        "camera_id": it.camera_id,
        "ts": it.timestamp.timestamp(),
        "timestamp": it.timestamp.isoformat(),
        "identity": it.identity or "",
        "track_id": it.track_id or "",
        "image_type": it.image_type,
        "crop_key": crop,
        "created_at": created.isoformat(),
        "seq": seq,
    }
    if provenance:
        row["source"] = it.source or ""
        row["frame"] = -1 if it.frame is None else int(it.frame)
        row["box"] = "" if it.box is None else ",".join(str(int(v)) for v in it.box)
    return row


def item_of(e: dict[str, Any]) -> Item:
    """The ``Item`` a row (with at least ``META_FIELDS``) describes."""
    return Item(
        item_id=e["item_id"],
        gallery=e["gallery"],
        camera_id=e["camera_id"],
        timestamp=datetime.fromisoformat(e["timestamp"]),
        image_type=e["image_type"],
        created_at=datetime.fromisoformat(e["created_at"]),
        identity=e.get("identity") or None,
        track_id=e.get("track_id") or None,
        source=e.get("source") or None,
        frame=None if e.get("frame", -1) < 0 else int(e["frame"]),
        box=_box(e.get("box") or ""),
    )


def _box(text: str) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    x, y, w, h = (int(v) for v in text.split(","))
    return (x, y, w, h)
