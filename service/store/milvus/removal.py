"""Removing items from the Milvus store: by id a batch at a time, or a whole day at once.

Rows always go before crops: a kill between the two leaves orphan crops, which
``MilvusStore.remove_orphan_crops`` clears, never an item without its crop. On day
partitions, a selection that covers a whole day of a gallery drops that day's partition and
its crop folder; the days it covers in part (the boundary day of a cut-off, a camera) lose
their items by id, within their partition.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date

from ..base import Selection, StoreRefusedError
from ..crops import CropStore, day_crop_prefix
from .connection import MilvusConnection, MilvusUnavailableError
from .expressions import literal, selection_expression
from .partitions import Partitions, day_span, partition_name, stale
from .search import MAX_TOPK

__all__ = ["Remover"]


class Remover:
    """Removes a store's items: ``conn``'s rows and ``crops``' files."""

    def __init__(self, conn: MilvusConnection, crops: CropStore, parts: Partitions | None) -> None:
        self.conn = conn
        self.crops = crops
        self.parts = parts

    def rows(self, sel: Selection, limit: int, parts: list[str] | None) -> int:
        """At most ``limit`` items of ``sel`` (in ``parts``): one delete by id, then their
        crops. Returns how many."""
        self.conn.check_open()
        expr = selection_expression(sel)
        rows = self.conn.query(
            expr, ["item_id", "crop_key"], limit=min(limit, MAX_TOPK), partitions=parts
        )
        if not rows:
            return 0
        self.conn.delete([r["item_id"] for r in rows])
        for r in rows:
            self.crops.delete(r["crop_key"])
        return len(rows)

    def days(self, parts: Partitions, sel: Selection, batch: int) -> int:
        """Every item of ``sel`` (no track) on day partitions: whole days dropped, the others
        by id, ``batch`` at a time. Returns how many."""
        self.conn.check_open()
        listing = parts.listing(fresh=True)
        removed = 0
        for gallery in [sel.gallery] if sel.gallery is not None else sorted(listing):
            for day in sorted(listing.get(gallery, ())):
                start, end = day_span(day)
                if (sel.before is not None and start >= sel.before) or (
                    sel.since is not None and end <= sel.since
                ):
                    continue
                whole = (
                    sel.camera_id is None
                    and (sel.before is None or end <= sel.before)
                    and (sel.since is None or start >= sel.since)
                )
                if whole:
                    removed += self.drop_day(parts, gallery, day)
                    continue
                part = replace(sel, gallery=gallery)
                try:
                    while True:
                        n = self.rows(part, batch, [partition_name(gallery, day)])
                        removed += n
                        if n < batch:
                            break
                except (MilvusUnavailableError, StoreRefusedError) as e:
                    if not stale(e):
                        raise  # else another replica dropped the day meanwhile
        return removed

    def drop_day(self, parts: Partitions, gallery: str, day: date) -> int:
        """Drop a day's partition, then its crops written before the drop began: a kill
        between leaves orphan crops, never an item without its crop, and an add racing the
        drop either fails whole (its partition gone) or, made after it, keeps its younger
        crops. Returns how many items the day held."""
        try:
            # the gallery's expression as well: Milvus Lite counts every partition without one
            expr = f"gallery == {literal(gallery)}"
            held = self.conn.count(expr, partitions=[partition_name(gallery, day)])
        except (MilvusUnavailableError, StoreRefusedError) as e:
            if not stale(e):
                raise
            held = 0  # released by a drop a crash interrupted: dropped now
        began = time.time()
        parts.drop(gallery, day)
        self.crops.delete_tree(day_crop_prefix(gallery, day), began)
        return held
