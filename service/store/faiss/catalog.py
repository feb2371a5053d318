"""The FAISS store's SQLite side: the truth about every item, and every SQL statement.

One writer connection (used under the store's writer mutex) and a small pool of read-only
connections. WAL with ``synchronous=FULL``: a committed transaction survives a power cut. The
rowid of an item is its id in the FAISS indexes, so a filter becomes a set of rowids here.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ..base import (
    GroupBy,
    Item,
    NewItem,
    SearchFilter,
    Selection,
    StoreError,
    StoreFullError,
    TrackSummary,
)
from ..durable import is_full

__all__ = ["Catalog", "ResolvedFilter"]

SCHEMA_VERSION = 2  # 2: provenance (source, frame, box); 1 is migrated on open
CHUNK = 4096  # rows per SQLite round trip when streaming embeddings
_LABEL_COLUMNS = {"identity": "identity", "track": "track_id"}  # fixed names, never user text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    gallery    TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
    rowid      INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id    TEXT NOT NULL UNIQUE,
    gallery    TEXT NOT NULL REFERENCES meta(gallery),
    camera_id  TEXT NOT NULL,
    ts         REAL NOT NULL,
    timestamp  TEXT NOT NULL,
    identity   TEXT,
    track_id   TEXT,
    image_type TEXT NOT NULL,
    image_path TEXT NOT NULL,
    embedding  BLOB NOT NULL,
    created_at TEXT NOT NULL,
    source     TEXT,
    frame      INTEGER,
    box        TEXT
);
CREATE INDEX IF NOT EXISTS items_gallery_camera ON items (gallery, camera_id);
CREATE INDEX IF NOT EXISTS items_gallery_ts ON items (gallery, ts);
CREATE INDEX IF NOT EXISTS items_gallery_track ON items (gallery, track_id);
CREATE INDEX IF NOT EXISTS items_ts ON items (ts);
"""
#: Columns each schema version added to ``items``, for opening a folder an older version made.
_ADDED_COLUMNS = {2: ("source TEXT", "frame INTEGER", "box TEXT")}

_ITEM_COLUMNS = (
    "rowid, item_id, gallery, camera_id, timestamp, image_type, created_at, identity, track_id,"
    " source, frame, box"
)


def _json_ids(ids: Sequence[int] | np.ndarray) -> str:
    return json.dumps([int(i) for i in ids])


def _box_text(box: tuple[int, int, int, int] | None) -> str | None:
    return None if box is None else ",".join(str(int(v)) for v in box)


def _box(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    x, y, w, h = (int(v) for v in text.split(","))
    return (x, y, w, h)


def _row_item(row: tuple) -> Item:
    _, item_id, gallery, camera, ts_text, image_type, created, identity, track = row[:9]
    source, frame, box = row[9:12]
    return Item(
        item_id=item_id,
        gallery=gallery,
        camera_id=camera,
        timestamp=datetime.fromisoformat(ts_text),
        image_type=image_type,
        created_at=datetime.fromisoformat(created),
        identity=identity,
        track_id=track,
        source=source,
        frame=frame,
        box=_box(box),
    )


def _database_error(e: sqlite3.Error) -> StoreError:
    if is_full(e):
        return StoreFullError(f"disk full: {e}")
    return StoreError(f"database error: {e}")


@dataclass
class ResolvedFilter:
    """A search filter resolved against SQLite."""

    gallery: str
    allowed: np.ndarray | None  # sorted rowids that may be returned; None: all live items
    negatives: np.ndarray  # rowids never to return (tombstones, the excluded item)
    n_avail: int  # how many items can be returned


class Catalog:
    """Items, galleries and their generations in ``path`` (created with its schema)."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self._pool_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        try:
            self.writer = self._connect()
            self._init_schema()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- connections and schema

    def _connect(self, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=30.0,
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            check_same_thread=False,  # used by one thread at a time, guarded by the locks
        )
        self._all.append(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _init_schema(self) -> None:
        c = self.writer
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if not 0 <= version <= SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {version} is newer than this version knows "
                f"({SCHEMA_VERSION}): upgrade the service"
            )
        with self._transaction():
            if version:  # a folder an older version made: add what it lacks, in place
                held = {r[1] for r in c.execute("PRAGMA table_info(items)")}
                for added in range(version + 1, SCHEMA_VERSION + 1):
                    for column in _ADDED_COLUMNS.get(added, ()):
                        if column.split()[0] not in held:  # constants, not user data
                            c.execute(f"ALTER TABLE items ADD COLUMN {column}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(
                "INSERT OR IGNORE INTO settings (key, value) VALUES ('dim', ?)", (str(self.dim),)
            )
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # a constant, not user data
        stored = c.execute("SELECT value FROM settings WHERE key = 'dim'").fetchone()[0]
        if int(stored) != self.dim:
            raise StoreError(f"the store at {self.path.parent} holds {stored}-d embeddings")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        c = self.writer
        try:
            c.execute("BEGIN IMMEDIATE")
            yield c
            c.execute("COMMIT")
        except sqlite3.Error as e:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise _database_error(e) from e
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection from the pool (a new one when all are busy)."""
        with self._pool_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = self._connect(readonly=True)
        try:
            yield conn
        finally:
            with self._pool_lock:
                self._readers.append(conn)

    def checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        for conn in self._all:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._all.clear()
        self._readers.clear()

    # ---------------------------------------------------------------- writes (writer mutex)

    def galleries(self) -> list[tuple[str, int]]:
        """Every gallery with its generation (bumped by each committed change)."""
        rows = self.writer.execute("SELECT gallery, generation FROM meta ORDER BY gallery")
        return rows.fetchall()

    def image_paths(self) -> set[str]:
        return {r[0] for r in self.writer.execute("SELECT image_path FROM items")}

    def insert(
        self,
        gallery: str,
        items: Sequence[NewItem],
        x: np.ndarray,
        ids: Sequence[str],
        paths: Sequence[str],
        created: Sequence[datetime],
    ) -> np.ndarray:
        """All rows and the generation bump in one transaction; returns the new rowids."""
        rowids = np.empty(len(items), dtype=np.int64)
        with self._transaction() as c:
            c.execute("INSERT OR IGNORE INTO meta (gallery, generation) VALUES (?, 0)", (gallery,))
            for n, it in enumerate(items):
                cur = c.execute(
                    "INSERT INTO items (item_id, gallery, camera_id, ts, timestamp, identity,"
                    " track_id, image_type, image_path, embedding, created_at, source, frame, box)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ids[n],
                        gallery,
                        it.camera_id,
                        it.timestamp.timestamp(),
                        it.timestamp.isoformat(),
                        it.identity,
                        it.track_id,
                        it.image_type,
                        paths[n],
                        x[n].astype("<f4").tobytes(),
                        created[n].isoformat(),
                        it.source,
                        None if it.frame is None else int(it.frame),
                        _box_text(it.box),
                    ),
                )
                rowids[n] = cur.lastrowid
            c.execute("UPDATE meta SET generation = generation + 1 WHERE gallery = ?", (gallery,))
        return rowids

    def locate(self, item_id: str) -> tuple[int, str, str] | None:
        """(rowid, gallery, image_path) of an item."""
        return self.writer.execute(
            "SELECT rowid, gallery, image_path FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()

    def galleries_of(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The gallery of each of ``item_ids`` that exists."""
        out: dict[str, str] = {}
        for start in range(0, len(item_ids), CHUNK):
            rows = self.writer.execute(
                "SELECT item_id, gallery FROM items"
                " WHERE item_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(item_ids[start : start + CHUNK])),),
            )
            out.update(rows.fetchall())
        return out

    def remove(self, rowid: int, gallery: str) -> None:
        with self._transaction() as c:
            c.execute("DELETE FROM items WHERE rowid = ?", (rowid,))
            c.execute("UPDATE meta SET generation = generation + 1 WHERE gallery = ?", (gallery,))

    def remove_batch(self, sel: Selection, limit: int) -> list[tuple[int, str, str]]:
        """Delete at most ``limit`` items matching ``sel`` and bump their
        galleries' generations, in one transaction; returns their (rowid, gallery, image_path)."""
        clauses, params = [], []
        for column, op, value in (
            ("gallery", "=", sel.gallery),
            ("camera_id", "=", sel.camera_id),
            ("track_id", "=", sel.track_id),
            ("ts", ">=", None if sel.since is None else sel.since.timestamp()),
            ("ts", "<", None if sel.before is None else sel.before.timestamp()),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")  # constants, not user data
                params.append(value)
        where = " AND ".join(clauses) or "1"
        with self._transaction() as c:
            rows = c.execute(
                f"SELECT rowid, gallery, image_path FROM items WHERE {where} LIMIT ?",
                (*params, limit),
            ).fetchall()
            if rows:
                c.execute(
                    "DELETE FROM items WHERE rowid IN (SELECT value FROM json_each(?))",
                    (_json_ids([r[0] for r in rows]),),
                )
                c.execute(
                    "UPDATE meta SET generation = generation + 1"
                    " WHERE gallery IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted({r[1] for r in rows})),),
                )
        return rows

    # ---------------------------------------------------------------- embeddings

    def _unpack(self, rows: list[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        x = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(-1, self.dim)
        return ids, np.ascontiguousarray(x, dtype=np.float32)

    def size(self, conn: sqlite3.Connection, gallery: str) -> int:
        return conn.execute("SELECT COUNT(*) FROM items WHERE gallery = ?", (gallery,)).fetchone()[
            0
        ]

    def rowids(self, conn: sqlite3.Connection, gallery: str) -> np.ndarray:
        cur = conn.execute("SELECT rowid FROM items WHERE gallery = ? ORDER BY rowid", (gallery,))
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def iter_embeddings(
        self, conn: sqlite3.Connection, gallery: str
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The gallery's (rowids, embeddings) in rowid order, a chunk at a time."""
        cur = conn.execute(
            "SELECT rowid, embedding FROM items WHERE gallery = ? ORDER BY rowid", (gallery,)
        )
        while rows := cur.fetchmany(CHUNK):
            yield self._unpack(rows)

    def embeddings_of(
        self, conn: sqlite3.Connection, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, embeddings) of the given rowids (those that exist), in rowid order."""
        out_ids, out_x = [np.zeros(0, np.int64)], [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(ids), CHUNK):
            rows = conn.execute(
                "SELECT rowid, embedding FROM items"
                " WHERE rowid IN (SELECT value FROM json_each(?)) ORDER BY rowid",
                (_json_ids(ids[start : start + CHUNK]),),
            ).fetchall()
            if rows:
                i, x = self._unpack(rows)
                out_ids.append(i)
                out_x.append(x)
        return np.concatenate(out_ids), np.concatenate(out_x)

    # ---------------------------------------------------------------- reads

    def item(self, conn: sqlite3.Connection, item_id: str) -> Item | None:
        row = conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()
        return None if row is None else _row_item(row)

    def item_with_embedding(
        self, conn: sqlite3.Connection, item_id: str
    ) -> tuple[Item, np.ndarray] | None:
        row = conn.execute(
            f"SELECT {_ITEM_COLUMNS}, embedding FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()
        if row is None:
            return None
        return _row_item(row[:-1]), np.frombuffer(row[-1], dtype="<f4").astype(np.float32)

    def embedding(self, conn: sqlite3.Connection, item_id: str) -> np.ndarray | None:
        row = conn.execute("SELECT embedding FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    def image_of(self, conn: sqlite3.Connection, item_id: str) -> tuple[str, str] | None:
        """(image_path, image_type) of an item."""
        return conn.execute(
            "SELECT image_path, image_type FROM items WHERE item_id = ?", (item_id,)
        ).fetchone()

    def counts(self, conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
        rows = conn.execute(
            "SELECT gallery, camera_id, COUNT(*) FROM items"
            " GROUP BY gallery, camera_id ORDER BY gallery, camera_id"
        ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for gallery, camera, n in rows:
            out.setdefault(gallery, {})[camera] = n
        return out

    def gallery_names(self, conn: sqlite3.Connection) -> list[str]:
        """Galleries holding at least one item."""
        return [r[0] for r in conn.execute("SELECT DISTINCT gallery FROM items ORDER BY gallery")]

    def gallery_counts(self, conn: sqlite3.Connection, gallery: str) -> dict[str, int]:
        rows = conn.execute(
            "SELECT camera_id, COUNT(*) FROM items WHERE gallery = ?"
            " GROUP BY camera_id ORDER BY camera_id",
            (gallery,),
        )
        return dict(rows.fetchall())

    def track_summaries(
        self, conn: sqlite3.Connection, gallery: str, camera_id: str | None
    ) -> list[TrackSummary]:
        """Every track of the gallery: two GROUP BYs on its (gallery, track_id) index. SQLite
        takes a bare column from the row holding the single MIN or MAX of its query."""
        where = "gallery = ? AND track_id IS NOT NULL"
        params: list[object] = [gallery]
        if camera_id is not None:
            where += " AND camera_id = ?"
            params.append(camera_id)
        firsts = {
            r[0]: r[1]
            for r in conn.execute(
                f"SELECT track_id, timestamp, MIN(ts) FROM items WHERE {where} GROUP BY track_id",
                params,
            )
        }
        out = []
        for track, ts_text, camera, n, _ in conn.execute(
            f"SELECT track_id, timestamp, camera_id, COUNT(*), MAX(ts) FROM items WHERE {where}"
            " GROUP BY track_id",
            params,
        ):
            out.append(
                TrackSummary(
                    track_id=track,
                    gallery=gallery,
                    camera_id=camera,
                    first=datetime.fromisoformat(firsts[track]),
                    last=datetime.fromisoformat(ts_text),
                    count=n,
                )
            )
        return out

    def count(self, conn: sqlite3.Connection, gallery: str | None) -> int:
        if gallery is None:
            return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return self.size(conn, gallery)

    def page(
        self, conn: sqlite3.Connection, gallery: str, after: int, limit: int
    ) -> list[tuple[int, Item, np.ndarray]]:
        """Up to ``limit`` items of ``gallery`` with rowid > ``after``, in rowid order."""
        rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS}, embedding FROM items WHERE gallery = ? AND rowid > ?"
            " ORDER BY rowid LIMIT ?",
            (gallery, after, limit),
        ).fetchall()
        return [
            (r[0], _row_item(r[:-1]), np.frombuffer(r[-1], dtype="<f4").astype(np.float32))
            for r in rows
        ]

    def track(
        self, conn: sqlite3.Connection, gallery: str, track_id: str, limit: int
    ) -> list[tuple[Item, np.ndarray]]:
        """A track's items with their embeddings, by time then rowid."""
        rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS}, embedding FROM items WHERE gallery = ? AND track_id = ?"
            " ORDER BY ts, rowid LIMIT ?",
            (gallery, track_id, limit),
        ).fetchall()
        return [
            (_row_item(r[:-1]), np.frombuffer(r[-1], dtype="<f4").astype(np.float32)) for r in rows
        ]

    def items_of(self, conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        for start in range(0, len(ids), CHUNK):
            rows = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items"
                " WHERE rowid IN (SELECT value FROM json_each(?))",
                (_json_ids(ids[start : start + CHUNK]),),
            )
            for row in rows:
                out[row[0]] = _row_item(row)
        return out

    def labels(
        self,
        conn: sqlite3.Connection,
        ids: np.ndarray,
        group_by: GroupBy,
        known: dict[int, str | None],
    ) -> None:
        """Add the identity or track of each of ``ids`` not yet in ``known``."""
        column = _LABEL_COLUMNS[group_by]
        missing = [int(i) for i in ids if int(i) not in known]
        for start in range(0, len(missing), CHUNK):
            rows = conn.execute(
                f"SELECT rowid, {column} FROM items"  # column: a constant from _LABEL_COLUMNS
                " WHERE rowid IN (SELECT value FROM json_each(?))",
                (_json_ids(missing[start : start + CHUNK]),),
            )
            known.update(rows.fetchall())

    def resolve(
        self,
        conn: sqlite3.Connection,
        gallery: str,
        where: SearchFilter,
        deleted: set[int],
        ntotal: int,
    ) -> ResolvedFilter:
        """Turn a filter into the rowids SQLite allows, or the rowids to leave out.

        A filter that only excludes (cameras, the query item) usually passes most of the
        gallery, so SQLite lists what it excludes instead: a few rows rather than nearly all.
        """
        negatives = np.fromiter(deleted, np.int64) if deleted else np.zeros(0, np.int64)
        w = where
        if w.cameras is None and w.since is None and w.until is None:
            parts = [negatives]
            if w.exclude_cameras:
                cur = conn.execute(
                    "SELECT rowid FROM items WHERE gallery = ?"
                    " AND camera_id IN (SELECT value FROM json_each(?))",
                    (gallery, json.dumps(sorted(w.exclude_cameras))),
                )
                parts.append(np.fromiter((r[0] for r in cur), dtype=np.int64))
            if w.exclude_item is not None:
                row = conn.execute(
                    "SELECT rowid FROM items WHERE item_id = ? AND gallery = ?",
                    (w.exclude_item, gallery),
                ).fetchone()
                if row is not None:
                    parts.append(np.array([row[0]], dtype=np.int64))
            if w.exclude_track is not None:
                cur = conn.execute(
                    "SELECT rowid FROM items WHERE gallery = ? AND track_id = ?",
                    (gallery, w.exclude_track),
                )
                parts.append(np.fromiter((r[0] for r in cur), dtype=np.int64))
            negatives = np.unique(np.concatenate(parts))  # sorted, no repeats
            return ResolvedFilter(gallery, None, negatives, ntotal - len(negatives))
        clauses = ["gallery = ?"]
        params: list[object] = [gallery]
        if w.cameras is not None:
            clauses.append("camera_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted(w.cameras)))
        if w.exclude_cameras:
            clauses.append("camera_id NOT IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted(w.exclude_cameras)))
        if w.since is not None:
            clauses.append("ts >= ?")
            params.append(w.since.timestamp())
        if w.until is not None:
            clauses.append("ts <= ?")
            params.append(w.until.timestamp())
        if w.exclude_item is not None:
            clauses.append("item_id != ?")
            params.append(w.exclude_item)
        if w.exclude_track is not None:
            clauses.append("(track_id IS NULL OR track_id != ?)")
            params.append(w.exclude_track)
        sql = "SELECT rowid FROM items WHERE " + " AND ".join(clauses) + " ORDER BY rowid"
        allowed = np.fromiter((r[0] for r in conn.execute(sql, params)), dtype=np.int64)
        return ResolvedFilter(gallery, allowed, np.zeros(0, np.int64), len(allowed))
