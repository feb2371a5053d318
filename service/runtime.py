"""What a running service holds: the model, the embedder, the gallery store, the query cache.

Composition only: ``model.loading`` opens the encoder, ``open_store`` the store ``SONA_STORE``
names; each failure becomes a ``StartupError`` with a one-line reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from model.loading import LoadedModel, NoExportError, StaleExportError, open_encoder
from model.preprocess import resize

from .embedder import Embedder
from .imaging import DecodedImage, decode_image
from .metrics import Metrics
from .query_cache import QueryCache
from .settings import Settings
from .store import FaissSqliteStore, GalleryStore

__all__ = ["Runtime", "StartupError", "load_model", "open_store"]

log = logging.getLogger("sona.service")


class StartupError(RuntimeError):
    """The service cannot start; the message says why in one line."""


def load_model(settings: Settings) -> LoadedModel:
    """The encoder ``settings`` name (checkpoint, export, backend, device, AMP)."""
    if settings.checkpoint is None:
        raise StartupError("no checkpoint: set SONA_CHECKPOINT to a SONA-Net checkpoint file")
    try:
        return open_encoder(
            settings.checkpoint,
            onnx_model=settings.onnx_model,
            backend=settings.backend,
            device=settings.device,
            amp=settings.amp,
        )
    except NoExportError as exc:
        raise StartupError(
            "SONA_BACKEND=onnx needs SONA_ONNX_MODEL (make one with sona export)"
        ) from exc
    except StaleExportError as exc:
        raise StartupError(f"{exc}, or set SONA_BACKEND=torch") from exc
    except ValueError as exc:  # CheckpointError, EncoderError, DeviceError: one line each
        raise StartupError(str(exc)) from exc


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
    def load(
        cls, settings: Settings, metrics: Metrics, model: LoadedModel | None = None
    ) -> Runtime:
        """Open the store around ``model`` (loaded from ``settings`` when not given)."""
        model = model or load_model(settings)
        store = open_store(settings, model.encoder.dim)
        embedder = Embedder(
            model.encoder,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            metrics=metrics,
        )
        return cls(settings, metrics, embedder, store, model.device, model.model_id, model.meta)

    def decode(self, data: bytes) -> tuple[DecodedImage, torch.Tensor]:
        """Validate and decode uploaded bytes; the crop resized for the network (uint8)."""
        s = self.settings
        image = decode_image(data, max_pixels=s.max_image_pixels, max_side=s.max_image_side)
        return image, resize(image.pixels, self.embedder.input_size)
