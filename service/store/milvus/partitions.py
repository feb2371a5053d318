"""Day partitions: a gallery's items of one UTC day in a Milvus partition of their own.

Removing a day of a gallery (retention, erasure) is then one partition drop, whatever the
number of items, and a search of a gallery, or of a time window in it, names only the
partitions it needs. A partition's name is ``g<hex of the gallery's UTF-8>_<YYYYMMDD>``:
Milvus allows only letters, digits and '_' in it, the hex is reversible (a listing of the
partitions is a listing of the galleries and their days) and a 64-character gallery gives
a name of 138 characters, within Milvus's 255.

Milvus caps the partitions of a collection (``rootCoord.maxPartitionNum``: 4096 on Milvus
2.3, ``_default`` included; 1024 from 2.4): a new gallery-day past it is refused with
``PartitionLimitError``. Collections made with ``gallery`` as partition key (before day
partitions) keep that layout: the store detects it on open and deletes item by item there.

Several replicas share the partitions: creating one that exists is not an error (a race
lost), a listing is cached for ``LISTING_TTL_S`` (on Strong consistency not at all), and a
partition another replica dropped meanwhile makes the caller list again (``stale``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from pymilvus import MilvusException

from ..base import StoreRefusedError
from .connection import MilvusConnection, MilvusUnavailableError

__all__ = [
    "EMPTY",
    "LISTING_TTL_S",
    "PartitionLimitError",
    "Partitions",
    "day_of",
    "day_span",
    "parse_partition",
    "partition_name",
    "stale",
]

#: How long a replica reuses its listing of the partitions (Session and weaker): a day another
#: replica has just created may be missed by searches for that long.
LISTING_TTL_S = 1.0

#: Where a gallery without partitions is read: ``_default`` holds no item of this layout (an
#: empty list of partition names would mean every partition to Milvus).
EMPTY = ["_default"]

_NAME = re.compile(r"g((?:[0-9a-f]{2})+)_(\d{8})")


class PartitionLimitError(StoreRefusedError):
    """The collection holds as many partitions as Milvus allows: no new gallery-day fits."""


def day_of(moment: datetime) -> date:
    """The UTC day an item's timestamp falls in: its partition's day."""
    return moment.astimezone(UTC).date()


def day_span(day: date) -> tuple[datetime, datetime]:
    """The first instant of ``day`` (UTC) and the first of the next."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def partition_name(gallery: str, day: date) -> str:
    return f"g{gallery.encode('utf-8').hex()}_{day:%Y%m%d}"


def parse_partition(name: str) -> tuple[str, date] | None:
    """The gallery and day a partition holds; None for one this store did not name."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    try:
        gallery = bytes.fromhex(m.group(1)).decode("utf-8")
        return gallery, datetime.strptime(m.group(2), "%Y%m%d").date()
    except ValueError:
        return None


def stale(exc: BaseException) -> bool:
    """Whether a failed call named a partition that is gone or being dropped (released)."""
    text = str(exc)
    return "partition" in text and ("not found" in text or "not loaded" in text)


T = TypeVar("T")


class Partitions:
    """The day partitions of one collection: listing (cached), creation and drops."""

    def __init__(self, conn: MilvusConnection, ttl: float = LISTING_TTL_S) -> None:
        self.conn = conn
        self.ttl = 0.0 if conn.consistency == "Strong" else ttl
        self._lock = threading.Lock()
        self._listed_at = -1e18
        self._days: dict[str, set[date]] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._listed_at = -1e18

    def listing(self, fresh: bool = False) -> dict[str, set[date]]:
        """Each gallery's days (a copy); ``fresh``: ask Milvus, whatever the cache holds."""
        now = time.monotonic()
        with self._lock:
            if not fresh and now - self._listed_at < self.ttl:
                return {g: set(d) for g, d in self._days.items()}
        with self.conn.errors("list partitions"):
            names = self.conn.client.list_partitions(
                self.conn.collection, timeout=self.conn.timeout
            )
        days: dict[str, set[date]] = {}
        for name in names:
            parsed = parse_partition(name)
            if parsed is not None:
                days.setdefault(parsed[0], set()).add(parsed[1])
        with self._lock:
            self._days, self._listed_at = days, now
        return {g: set(d) for g, d in days.items()}

    def of(
        self,
        gallery: str,
        since: datetime | None = None,
        until: datetime | None = None,
        fresh: bool = False,
    ) -> list[str]:
        """The partitions of ``gallery`` whose day meets ``[since, until]``, oldest first."""
        lo = None if since is None else day_of(since)
        hi = None if until is None else day_of(until)
        days = self.listing(fresh).get(gallery, set())
        return [
            partition_name(gallery, d)
            for d in sorted(days)
            if (lo is None or d >= lo) and (hi is None or d <= hi)
        ]

    def ensure(self, gallery: str, days: Iterable[date]) -> None:
        """Create the partitions of these days that are missing (another replica creating
        the same one at once is no error). ``PartitionLimitError`` past Milvus's cap."""
        wanted = set(days)
        if wanted <= self.listing().get(gallery, set()):
            return
        held = self.listing(fresh=True).get(gallery, set())
        for day in sorted(wanted - held):
            name = partition_name(gallery, day)
            try:
                with self.conn.errors("create partition"), self.conn.write_lock:
                    self.conn.client.create_partition(
                        self.conn.collection, name, timeout=self.conn.timeout
                    )
            except Exception as e:
                if "exceeds max" in str(e):
                    raise PartitionLimitError(
                        f"collection {self.conn.collection} holds as many partitions as Milvus "
                        "allows (rootCoord.maxPartitionNum; each gallery keeps one per day of "
                        "items): shorten the retention, merge galleries or raise the limit"
                    ) from e
                if day not in self.listing(fresh=True).get(gallery, set()):
                    raise  # not a race with another replica creating it
        self.invalidate()

    def drop(self, gallery: str, day: date) -> None:
        """Drop the partition of ``gallery``'s ``day`` with its items (released first where
        Milvus requires it); one that is already gone is no error."""
        name = partition_name(gallery, day)
        c, coll, t = self.conn.client, self.conn.collection, self.conn.timeout
        try:
            with self.conn.errors("drop partition"), self.conn.write_lock:
                try:
                    c.drop_partition(coll, name, timeout=t)
                except MilvusException as e:
                    if "release it first" not in str(e):
                        raise
                    c.release_partitions(coll, [name], timeout=t)
                    c.drop_partition(coll, name, timeout=t)
        except Exception:
            if day in self.listing(fresh=True).get(gallery, set()):
                raise  # not one another replica dropped first
        finally:
            self.invalidate()

    def read(
        self,
        gallery: str,
        read: Callable[[list[str] | None], T],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> T:
        """``read(partitions)`` on the partitions of ``gallery`` that meet the window. A
        partition dropped or released meanwhile (by another replica) makes it list afresh and
        read again; failing twice, it reads every loaded partition (``None``), the gallery's
        expression keeping the answer right."""
        names = self.of(gallery, since, until) or self.of(gallery, since, until, fresh=True)
        try:
            return read(names or EMPTY)
        except (MilvusUnavailableError, StoreRefusedError) as e:
            if not stale(e):
                raise
        try:
            return read(self.of(gallery, since, until, fresh=True) or EMPTY)
        except (MilvusUnavailableError, StoreRefusedError) as e:
            if not stale(e):
                raise
        return read(None)
