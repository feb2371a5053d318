"""Reading the audit trail: the current file and its rotated predecessors, oldest first.

Kept free of the web framework so that ``sona audit`` starts quickly. A line cut short by a
crash inside its one ``write`` (the only way one can be torn) is not JSON: it is skipped and
counted, never mistaken for a record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["AuditQuery", "audit_files", "read_audit", "rotated"]


def rotated(path: Path, n: int) -> Path:
    """The ``n``-th rotated file: ``audit.log.1`` is the newest of them."""
    return path.with_name(f"{path.name}.{n}")


def audit_files(path: Path) -> list[Path]:
    """The trail's files, oldest first: ``audit.log.N`` ... ``audit.log.1``, ``audit.log``."""
    numbered = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            numbered.append((int(suffix), candidate))
    files = [p for _, p in sorted(numbered, reverse=True)]
    return [*files, path] if path.exists() else files


@dataclass
class AuditQuery:
    """Which records to return; every given condition must hold."""

    key: str | None = None
    item: str | None = None  # returned, written, or searched by
    gallery: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    torn: int = field(default=0, init=False)  # lines that were not complete records

    @staticmethod
    def _touches(record: dict, item: str) -> bool:
        """The item was returned or written, or was the query (a search by item)."""
        filters = record.get("filters")
        queried = isinstance(filters, dict) and filters.get("item_id") == item
        return queried or item in (record.get("items") or ())

    def matches(self, record: dict) -> bool:
        if self.key is not None and record.get("key") != self.key:
            return False
        if self.gallery is not None and record.get("gallery") != self.gallery:
            return False
        if self.item is not None and not self._touches(record, self.item):
            return False
        if self.since is not None or self.until is not None:
            try:
                when = datetime.fromisoformat(record["time"])
            except (KeyError, TypeError, ValueError):
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True


def read_audit(path: Path, query: AuditQuery) -> Iterator[dict]:
    """The records that match ``query``, oldest first; ``query.torn`` counts skipped lines."""
    for file in audit_files(path):
        try:
            handle = file.open("rb")
        except FileNotFoundError:  # rotated away while we read
            continue
        with handle:
            for line in handle:
                try:
                    record = json.loads(line) if line.endswith(b"\n") else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    record = None
                if not isinstance(record, dict):
                    query.torn += bool(line.strip())
                    continue
                if query.matches(record):
                    yield record
