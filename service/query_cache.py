"""Embeddings of ``POST /embed`` kept a while, so ``GET /search?query_id=`` can use them."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict

import numpy as np

__all__ = ["QueryCache"]


class QueryCache:
    """At most ``size`` vectors, each for ``ttl`` seconds; the oldest go first when full."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, vector: np.ndarray) -> str:
        query_id = uuid.uuid4().hex
        with self._lock:
            self._items[query_id] = (time.monotonic() + self.ttl, vector)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return query_id

    def get(self, query_id: str) -> np.ndarray | None:
        with self._lock:
            entry = self._items.get(query_id)
            if entry is None:
                return None
            expires, vector = entry
            if time.monotonic() > expires:
                del self._items[query_id]
                return None
            return vector
