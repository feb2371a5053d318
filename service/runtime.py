"""What a running service holds: the model, the embedder, the gallery store, the query cache."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model import CheckpointError, load_checkpoint
from model.preprocess import resize

from .embedder import Embedder
from .imaging import DecodedImage, decode_image
from .metrics import Metrics
from .settings import Settings
from .store import FaissSqliteStore, GalleryStore

__all__ = ["QueryCache", "Runtime", "StartupError", "open_store", "resolve_device"]

log = logging.getLogger("sona.service")


class StartupError(RuntimeError):
    """The service cannot start; the message says why in one line."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StartupError(f"SONA_DEVICE={name} but no CUDA device is available")
    return device


class QueryCache:
    """Embeddings of ``POST /embed`` kept for ``ttl`` seconds, at most ``size`` of them."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()

    def put(self, vector: np.ndarray) -> str:
        query_id = uuid.uuid4().hex
        self._items[query_id] = (time.monotonic() + self.ttl, vector)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return query_id

    def get(self, query_id: str) -> np.ndarray | None:
        entry = self._items.get(query_id)
        if entry is None:
            return None
        expires, vector = entry
        if time.monotonic() > expires:
            del self._items[query_id]
            return None
        return vector


def open_store(settings: Settings, dim: int) -> GalleryStore:
    """The gallery store ``SONA_STORE`` names; raises ``StartupError`` with a one-line reason.

    pymilvus is imported only for ``milvus``, so the default install does not need it.
    """
    if settings.store == "milvus":
        try:
            from .store.milvus import MilvusStore
        except ImportError as exc:
            raise StartupError("SONA_STORE=milvus needs pip install sona-reid[milvus]") from exc
        uri = settings.milvus_uri or str(settings.data_dir / "milvus.db")
        try:
            return MilvusStore(
                uri,
                dim=dim,
                token=settings.milvus_token or None,
                collection_prefix=settings.milvus_collection_prefix,
                crops=settings.crops_dir,  # None: beside a Milvus Lite .db; a server needs it
                index=settings.milvus_index or None,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise StartupError(f"cannot open the Milvus gallery at {uri}: {exc}") from exc
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return FaissSqliteStore(settings.data_dir, dim=dim, index=settings.index)
    except (OSError, ValueError, RuntimeError) as exc:
        raise StartupError(f"cannot open the gallery in {settings.data_dir}: {exc}") from exc


def checkpoint_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    embedder: Embedder
    store: GalleryStore
    device: torch.device
    model_id: str
    model_meta: dict = field(default_factory=dict)
    queries: QueryCache = field(init=False)
    ready: bool = False

    def __post_init__(self) -> None:
        self.queries = QueryCache(self.settings.query_ttl_s, self.settings.query_cache_size)

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics) -> Runtime:
        """Load the checkpoint, open the store; raises ``StartupError`` with a one-line reason."""
        if settings.checkpoint is None:
            raise StartupError("no checkpoint: set SONA_CHECKPOINT to a SONA-Net checkpoint file")
        device = resolve_device(settings.device)
        try:
            net, meta = load_checkpoint(settings.checkpoint, device)
        except CheckpointError as exc:
            raise StartupError(str(exc)) from exc
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        config = net.config
        stages = "+".join(map(str, config.sona_stages)) or "none"
        model_id = (
            f"sona-net-r{config.depth}-sona{stages}-{config.input_size[0]}x{config.input_size[1]}"
            f"@{checkpoint_digest(Path(settings.checkpoint))}"
        )
        store = open_store(settings, net.embedding_dim)
        embedder = Embedder(
            net,
            device,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            amp=settings.amp,
            metrics=metrics,
        )
        return cls(settings, metrics, embedder, store, device, model_id, meta)

    def decode(self, data: bytes) -> tuple[DecodedImage, torch.Tensor]:
        """Validate and decode uploaded bytes; the crop resized for the network (uint8)."""
        s = self.settings
        image = decode_image(data, max_pixels=s.max_image_pixels, max_side=s.max_image_side)
        return image, resize(image.pixels, self.embedder.input_size)
