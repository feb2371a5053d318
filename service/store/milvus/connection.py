"""One store's connection to Milvus: errors mapped to store errors, reads at the right
consistency level, scans, and the writes serialised where Milvus Lite needs it.

Consistency. Every search and query asks for the store's ``consistency`` (``Session`` by
default; the collection is created with it too). ``Strong``: Milvus serves a read only once
every write acknowledged before it is visible, whichever replica wrote it; its cost is a wait
for the time tick, many times a search's own cost on a real server (bench/RESULTS.md).
``Session``: this replica's own inserts are visible to its next read (the client tracks
them), other replicas' writes within Milvus's time tick. pymilvus does not track a session's
deletes, so this replica remembers the ids it deleted for ``STRONG_AFTER_DELETE_S`` (Milvus's
time tick has carried the delete well before) and leaves them out of what it reads: searches
and reads by id stay at Session, a replica always reads its own deletes, and no request pays
Strong's wait for the time tick (bench/RESULTS.md). Only counts (``count(*)``, which cannot
leave ids out) ask for ``Strong`` in that window. ``Bounded`` and ``Eventually`` may miss even
this replica's latest inserts for a moment.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient, MilvusException

from ..base import (
    ITEM_ID,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreRefusedError,
    StoreUnavailableError,
)
from ..durable import is_full
from . import lite
from .collection import refused
from .expressions import literal, string_list

__all__ = ["SCAN_BATCH", "STRONG_AFTER_DELETE_S", "MilvusConnection", "MilvusUnavailableError"]

SCAN_BATCH = 4096

#: Milvus builds no index on a sealed segment smaller than this (searched exactly instead).
UNINDEXED_ROWS = 1024

#: Seconds after a delete during which a Session replica reads at Strong: Milvus's time tick
#: (200 ms by default) has carried the delete well before, even on a loaded server.
STRONG_AFTER_DELETE_S = 5.0


class MilvusUnavailableError(StoreUnavailableError):
    """Milvus failed or could not be reached: the request itself was fine (not a StoreError)."""


class MilvusConnection:
    """A ``MilvusClient`` on one collection, its errors turned into the store's."""

    def __init__(
        self, uri: str, token: str | None, collection: str, timeout: float, consistency: str
    ) -> None:
        self.uri = uri
        self.lite = lite.is_lite(uri)
        self.collection = collection
        self.timeout = timeout
        self.consistency = consistency
        self.closed = True
        #: Whether this connection has inserted yet: pymilvus reads a Session before its
        #: first write as Eventually, which may miss rows another process wrote just before.
        self.wrote = False
        self._strong_until = 0.0  # monotonic time until which counts ask for Strong
        self._gone: dict[str, float] = {}  # ids this replica deleted -> when to forget them
        self._gone_lock = threading.Lock()
        self.lite_path: str | None = None
        self.write_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.lite:
            path = Path(uri).resolve()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {path.parent}: {e}") from e
            self.lite_path = str(path)
            uri = str(path)
            lite.quiet_iterators()
            self.write_lock = lite.acquire(self.lite_path)
        try:
            self.client = self._connect(uri, token)
        except BaseException:
            if self.lite_path is not None:
                lite.release(self.lite_path)
            raise
        self.closed = False

    def _connect(self, uri: str, token: str | None) -> MilvusClient:
        try:
            options: dict[str, Any] = {}
            if self.lite:  # its server refuses pymilvus's 10 s idle pings ("too many pings"),
                # closing a connection idle for half a minute: ping only during calls
                options = {"grpc.keepalive_permit_without_calls": False}
            return MilvusClient(
                uri=uri, token=token or "", timeout=self.timeout, grpc_options=options
            )
        except MilvusException as e:
            if self.lite:
                if "milvus-lite is required" in str(e) or "milvus_lite" in str(e):
                    raise StoreError(
                        f"{self.uri} is a Milvus Lite database: pip install milvus-lite"
                    ) from e
                raise StoreLockedError(
                    f"cannot open Milvus Lite at {self.uri}: is it open in another process "
                    f"(a running service)? ({e.message})"
                ) from e
            raise MilvusUnavailableError(f"cannot connect to Milvus at {self.uri}: {e}") from e

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Milvus errors as store errors: disk full, or Milvus unavailable (not the caller's)."""
        try:
            yield
        except (StoreError, MilvusUnavailableError):
            raise
        except MilvusException as e:
            if is_full(e):
                raise StoreFullError(f"Milvus is out of space ({what}): {e}") from e
            if self.closed:
                raise StoreError("the store is closed") from e
            if refused(e):
                raise StoreRefusedError(f"Milvus refused the {what}: {e.message}") from e
            raise MilvusUnavailableError(f"Milvus {what} failed: {e}") from e
        except Exception as e:
            if self.closed:
                raise StoreError("the store is closed") from e
            if type(e).__module__.startswith("grpc"):
                raise MilvusUnavailableError(f"Milvus {what} failed: {e}") from e
            raise

    def check_open(self) -> None:
        if self.closed:
            raise StoreError("the store is closed")

    def read_level(self) -> str:
        """The level a count asks for: the store's, or Strong just after this replica deleted."""
        if self.consistency == "Session" and time.monotonic() < self._strong_until:
            return "Strong"
        return self.consistency

    def gone(self, item_id: str) -> bool:
        """Whether this replica deleted ``item_id`` so recently that Milvus may still show it."""
        with self._gone_lock:
            until = self._gone.get(item_id)
            return until is not None and until > time.monotonic()

    def visible(self, rows: Iterable[Any], key: Callable[[Any], str]) -> list[Any]:
        """``rows`` less those of items this replica recently deleted."""
        rows = list(rows)
        with self._gone_lock:
            if not self._gone:
                return rows
            now = time.monotonic()
            if len(self._gone) > 1024 or next(iter(self._gone.values())) <= now:
                self._gone = {i: t for i, t in self._gone.items() if t > now}
            gone = self._gone
            return [r for r in rows if gone.get(key(r), 0.0) <= now]

    def query(
        self,
        expr: str,
        fields: list[str],
        limit: int | None = None,
        strong: bool = True,
        partitions: list[str] | None = None,
        level: str | None = None,
    ) -> list[dict]:
        """Rows matching ``expr`` (in ``partitions`` only, when given). ``strong=False``: the
        caller leaves out recent deletes itself (``visible``), so the read never needs Strong.
        ``level`` overrides both."""
        kwargs: dict[str, Any] = {"limit": limit} if limit is not None else {}
        if partitions is not None:
            kwargs["partition_names"] = partitions
        level = level or (self.read_level() if strong else self.consistency)
        with self.errors("query"):
            return self.client.query(
                self.collection,
                filter=expr,
                output_fields=fields,
                consistency_level=level,
                timeout=self.timeout,
                **kwargs,
            )

    def count(self, expr: str, strong: bool = True, partitions: list[str] | None = None) -> int:
        """Rows matching ``expr``; ``strong=False``: recent deletes may still be counted."""
        rows = self.query(expr, ["count(*)"], strong=strong, partitions=partitions)
        return int(rows[0]["count(*)"]) if rows else 0

    def scan(
        self,
        expr: str,
        fields: list[str],
        batch: int = SCAN_BATCH,
        partitions: list[str] | None = None,
    ) -> Iterator[list[dict]]:
        """Every row matching ``expr``, a batch at a time (a query iterator, in key order)."""
        kwargs: dict[str, Any] = {} if partitions is None else {"partition_names": partitions}
        with self.errors("scan"):
            it = self.client.query_iterator(
                self.collection,
                batch_size=batch,
                filter=expr,
                output_fields=fields,
                timeout=self.timeout,
                **kwargs,
            )
        try:
            while True:
                with self.errors("scan"):
                    rows = it.next()
                if not rows:
                    return
                yield rows
        finally:
            with contextlib.suppress(Exception):
                it.close()

    def indexed_rows(self) -> int:
        """Rows the query nodes serve from sealed segments with their index loaded (or too
        small to need one): all of them once a flush's segments are indexed. Rows in growing
        segments are searched through an interim index at lower recall (see ``search.py``)."""
        with self.errors("segment info"):
            loaded = self.client.list_loaded_segments(self.collection, timeout=self.timeout)
        return sum(
            s.num_rows
            for s in loaded
            if _sealed(s.state) and (s.index_id or s.num_rows < UNINDEXED_ROWS)
        )

    def by_id(self, item_id: object, fields: list[str]) -> dict | None:
        if not isinstance(item_id, str) or not ITEM_ID.fullmatch(item_id):
            return None  # not an id this store gives out: no such item
        self.check_open()
        if self.gone(item_id):
            return None
        rows = self.query(f"item_id == {literal(item_id)}", fields, limit=1, strong=False)
        return rows[0] if rows else None

    def search(
        self,
        q: Any,
        limit: int,
        expr: str,
        fields: list[str],
        params: dict,
        partitions: list[str] | None = None,
    ) -> list:
        """Milvus's hits, recent deletes included (the caller leaves them out with ``visible``
        after judging from their number whether more exist)."""
        kwargs: dict[str, Any] = {} if partitions is None else {"partition_names": partitions}
        with self.errors("search"):
            result = self.client.search(
                self.collection,
                data=[q],
                limit=limit,
                filter=expr,
                output_fields=fields,
                search_params=params,
                consistency_level=self.consistency,
                timeout=self.timeout,
                **kwargs,
            )
        return list(result[0])

    def insert(self, rows: list[dict], partition: str | None = None) -> None:
        """Insert ``rows`` (into ``partition``); all of them acknowledged, or an error."""
        kwargs: dict[str, Any] = {} if partition is None else {"partition_name": partition}
        with self.errors("insert"), self.write_lock:
            result = self.client.insert(self.collection, rows, timeout=self.timeout, **kwargs)
        self.wrote = True
        if int(result.get("insert_count", len(rows))) != len(rows):
            raise MilvusUnavailableError(
                f"Milvus inserted {result.get('insert_count')} of {len(rows)} rows"
            )

    def delete(self, item_ids: list[str]) -> None:
        """Delete these items; this replica's next reads will not see them."""
        expr = f"item_id in {string_list(item_ids)}"
        with self.errors("delete"), self.write_lock:
            self.client.delete(self.collection, filter=expr, timeout=self.timeout)
            until = time.monotonic() + STRONG_AFTER_DELETE_S
            with self._gone_lock:
                for item_id in item_ids:
                    self._gone.pop(item_id, None)  # keep the dict in expiry order
                    self._gone[item_id] = until
            self._strong_until = until

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.client.close()
        if self.lite_path is not None:
            lite.release(self.lite_path)


def _sealed(state: object) -> bool:
    """A loaded segment's state is sealed or flushed (not growing): pymilvus gives an enum
    or its number (Growing 2, Sealed 3, Flushed 4)."""
    name = getattr(state, "name", None)
    return name in ("Sealed", "Flushed") if name else int(state) in (3, 4)  # type: ignore[call-overload]
