"""Retention: items older than a gallery's retention period go, crops included, once at
start-up and then every ``SONA_RETENTION_SWEEP_S`` seconds.

``SONA_RETENTION_DAYS`` applies to every gallery; ``SONA_RETENTION_DAYS_BY_GALLERY``
(``lobby=7,entrance=30``) overrides it per gallery, and sets a period for galleries when no
default is set. The store removes items in bounded batches, each durable before the next, so
a sweep killed midway leaves whole items and the next sweep continues where it stopped; on
Milvus's day partitions every whole day before the cut-off goes as one partition drop.
Each sweep is a line of the audit trail and counts on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta

from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter, Gauge

from .audit import AuditLog
from .metrics import Metrics
from .store import GalleryStore

__all__ = ["RetentionPolicy", "RetentionSweeper"]

log = logging.getLogger("sona.service")


class RetentionPolicy:
    """How many days each gallery keeps its items (None: forever)."""

    def __init__(self, default_days: float | None, by_gallery: dict[str, float]) -> None:
        self.default_days = default_days
        self.by_gallery = dict(by_gallery)

    def __bool__(self) -> bool:
        return self.default_days is not None or bool(self.by_gallery)

    def days(self, gallery: str) -> float | None:
        return self.by_gallery.get(gallery, self.default_days)


class RetentionSweeper:
    def __init__(
        self,
        store: GalleryStore,
        policy: RetentionPolicy,
        *,
        interval_s: float,
        batch: int,
        audit: AuditLog,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self.batch = batch
        self.audit = audit
        self.stopping = threading.Event()
        self._busy = threading.Lock()
        r = metrics.registry
        self.removed = Counter(
            "sona_retention_removed_items_total",
            "Items the retention sweeps removed, crops included",
            ["gallery"],
            registry=r,
        )
        self.sweeps = Counter(
            "sona_retention_sweeps_total", "Retention sweeps, by outcome", ["outcome"], registry=r
        )
        self.last = Gauge(
            "sona_retention_last_sweep_timestamp_seconds",
            "When the last retention sweep ended (Unix time)",
            registry=r,
        )

    def wait_idle(self) -> None:
        """Return once no sweep runs (the store may close then)."""
        with self._busy:
            pass

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """One pass over every gallery with a retention period: items removed per gallery."""
        with self._busy:
            return self._sweep(now or datetime.now(UTC))

    def _sweep(self, now: datetime) -> dict[str, int]:
        removed: dict[str, int] = {}
        cutoffs: dict[str, str] = {}
        outcome, error = "done", None
        try:
            for gallery in self.store.galleries():
                days = self.policy.days(gallery)
                if days is None or self.stopping.is_set():
                    continue
                cutoff = now - timedelta(days=days)
                cutoffs[gallery] = cutoff.isoformat()
                n = self.store.expire(cutoff, gallery, batch=self.batch)
                if n:
                    removed[gallery] = n
                    self.removed.labels(gallery).inc(n)
        except Exception as exc:  # the store down: said in the log and the trail, retried later
            outcome, error = "failed", str(exc)[:500]
            log.error("retention sweep failed: %s", error)
        self.sweeps.labels(outcome).inc()
        self.last.set_to_current_time()
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key": None,
            "event": "retention-sweep",
            "outcome": outcome,
            "removed": removed,
            "cutoffs": cutoffs,
        }
        if error:
            record["error"] = error
        self.audit.write(record)
        if removed:
            log.info(
                "retention: removed %s", ", ".join(f"{n} from {g}" for g, n in removed.items())
            )
        return removed

    async def run(self) -> None:
        """Sweep now, then every ``interval_s`` until cancelled."""
        while not self.stopping.is_set():
            await run_in_threadpool(self.sweep)
            await asyncio.sleep(self.interval_s)
