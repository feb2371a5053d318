"""What a running service holds: the model, the embedder, the gallery store, the query cache.

Composition only: ``model.loading`` opens the encoder, ``open_store`` the store ``SONA_STORE``
names; each failure becomes a ``StartupError`` with a one-line reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from model.loading import LoadedModel, StaleExportError, open_encoder

from .budget import PixelBudget, RequestPixels
from .embedder import Embedder
from .imaging import decode_image
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
            probe_cache=settings.data_dir / "encoder-probe.json",
        )
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
                consistency=settings.milvus_consistency,
                ef_search=settings.milvus_ef,
                timeout=settings.milvus_timeout_s,
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
    encoder_choice: dict = field(default_factory=dict)  # runtime, chosen_by, reason, cpu, probe
    queries: QueryCache = field(init=False)
    pixels: PixelBudget = field(init=False)
    ready: bool = False

    def __post_init__(self) -> None:
        s = self.settings
        self.queries = QueryCache(s.query_ttl_s, s.query_cache_size)
        self.pixels = PixelBudget(s.decode_pixels, s.decode_wait_s)

    @classmethod
    def load(
        cls,
        settings: Settings,
        metrics: Metrics,
        model: LoadedModel | None = None,
        store: GalleryStore | None = None,
    ) -> Runtime:
        """Compose the service; ``model`` and ``store`` open from ``settings`` when not given."""
        model = model or load_model(settings)
        store = store or open_store(settings, model.encoder.dim)
        embedder = Embedder(
            model.encoder,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            metrics=metrics,
        )
        choice = model.choice.as_dict() if model.choice else {}
        return cls(
            settings, metrics, embedder, store, model.device, model.model_id, model.meta, choice
        )

    def decode(self, data: bytes, request: RequestPixels) -> tuple[str, torch.Tensor]:
        """Validate and decode uploaded bytes: (media type, the crop at the network's input
        size, uint8). The full-size pixels never outlive the call, and they are reserved from
        the process's budget and counted against the request's before they are decoded."""
        s = self.settings

        @contextlib.contextmanager
        def reserve(pixels: int) -> Iterator[None]:
            request.take(pixels)
            with self.pixels.reserve(pixels):
                yield

        image = decode_image(
            data,
            max_pixels=s.max_image_pixels,
            max_side=s.max_image_side,
            size=self.embedder.input_size,
            reserve=reserve,
        )
        return image.media_type, image.pixels
