"""What a running service holds: the model, the embedder, the gallery store, the query cache."""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model import CheckpointError, SONANetConfig, load_checkpoint
from model.checkpoint import file_sha256, read_checkpoint
from model.encoders import Encoder, OnnxEncoder, TorchEncoder, cpu_has_bf16
from model.export import OnnxExportError, read_onnx_meta
from model.preprocess import resize

from .embedder import Embedder
from .imaging import DecodedImage, decode_image
from .metrics import Metrics
from .settings import Settings
from .store import FaissSqliteStore, GalleryStore

__all__ = [
    "QueryCache",
    "Runtime",
    "StartupError",
    "check_onnx_model",
    "onnx_model",
    "open_store",
    "resolve_device",
]

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


def onnx_model(settings: Settings) -> Path | None:
    """The ONNX export to serve, or None for PyTorch.

    ``SONA_ONNX_MODEL`` when set (and ``SONA_BACKEND`` is not ``torch``). Otherwise, with
    ``SONA_BACKEND=auto`` on a CPU, ``<checkpoint>.int8.onnx`` beside the checkpoint (what
    ``sona export --int8`` writes) when it exists: the fastest CPU path once it is made.
    """
    if settings.backend == "torch":
        return None
    if settings.onnx_model is not None:
        return settings.onnx_model
    if settings.backend == "onnx":
        raise StartupError("SONA_BACKEND=onnx needs SONA_ONNX_MODEL (make one with sona export)")
    if settings.checkpoint is not None and resolve_device(settings.device).type == "cpu":
        beside = Path(settings.checkpoint).with_suffix(".int8.onnx")
        if beside.is_file():
            return beside
    return None


def check_onnx_model(settings: Settings, digest: str | None = None) -> Path | None:
    """The export to serve (see ``onnx_model``), refused with ``StartupError`` unless it is a
    SONA-Net export of this very checkpoint. Cheap enough for ``sona serve`` to run before the
    server starts, so a refusal is one line.
    """
    path = onnx_model(settings)
    if path is None:
        return None
    if not Path(path).is_file():
        raise StartupError(f"SONA_ONNX_MODEL not found: {path}")
    try:
        meta = read_onnx_meta(path)
    except OnnxExportError as exc:
        raise StartupError(f"ONNX model {exc}") from exc
    digest = digest or file_sha256(settings.checkpoint)
    exported_from = str(meta.get("checkpoint_sha256"))
    if exported_from != digest:
        raise StartupError(
            f"ONNX model {path} was exported from another checkpoint than SONA_CHECKPOINT "
            f"({exported_from[:12]} != {digest[:12]}): export it again with sona export, or "
            "set SONA_BACKEND=torch"
        )
    return Path(path)


def open_onnx_encoder(path: Path, config: SONANetConfig, device: torch.device) -> Encoder:
    """The ONNX Runtime encoder of an export ``check_onnx_model`` accepted."""
    try:
        encoder = OnnxEncoder(path, device=device.type)
    except ImportError as exc:
        raise StartupError("serving ONNX needs onnxruntime (pip install onnxruntime)") from exc
    except Exception as exc:  # onnxruntime's own errors: a corrupt or incompatible file
        raise StartupError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
    if encoder.input_size != tuple(config.input_size) or encoder.dim != config.embedding_dim:
        raise StartupError(f"{path} does not match the checkpoint's input size or dimension")
    return encoder


def torch_encoder(net: torch.nn.Module, device: torch.device, amp: bool) -> Encoder:
    """PyTorch, channels_last, bf16 autocast where the device runs bf16 natively."""
    if device.type == "cuda":
        bf16 = amp and torch.cuda.is_bf16_supported()
    else:
        bf16 = amp and cpu_has_bf16()
    return TorchEncoder(net, device, bf16=bf16, channels_last=True)


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
        digest = file_sha256(settings.checkpoint)
        try:
            if (exported := check_onnx_model(settings, digest)) is not None:
                # the weights live in the export: read only the checkpoint's config
                payload = read_checkpoint(settings.checkpoint)
                config, meta = SONANetConfig.from_dict(payload["config"]), payload["meta"]
                encoder = open_onnx_encoder(exported, config, device)
            else:
                net, meta = load_checkpoint(settings.checkpoint, device)
                config = net.config
                encoder = torch_encoder(net, device, settings.amp)
        except (CheckpointError, TypeError, ValueError) as exc:
            raise StartupError(str(exc)) from exc
        stages = "+".join(map(str, config.sona_stages)) or "none"
        model_id = (
            f"sona-net-r{config.depth}-sona{stages}-{config.input_size[0]}x{config.input_size[1]}"
            f"@{digest[:12]}"
        )
        store = open_store(settings, encoder.dim)
        embedder = Embedder(
            encoder,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            metrics=metrics,
        )
        return cls(settings, metrics, embedder, store, device, model_id, meta)

    def decode(self, data: bytes) -> tuple[DecodedImage, torch.Tensor]:
        """Validate and decode uploaded bytes; the crop resized for the network (uint8)."""
        s = self.settings
        image = decode_image(data, max_pixels=s.max_image_pixels, max_side=s.max_image_side)
        return image, resize(image.pixels, self.embedder.input_size)
