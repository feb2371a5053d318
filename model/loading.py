"""Open an encoder from plain values: checkpoint, optional ONNX export, backend, device, AMP.

The checkpoint is read and hashed once: its SHA-256 names the model and ties an ONNX export to
the checkpoint it came from, so a service never serves an export of another model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .checkpoint import CheckpointError, build_network, checkpoint_config, parse_checkpoint
from .config import SONANetConfig
from .device import resolve_device
from .encoders import Encoder, OnnxEncoder, TorchEncoder, cpu_has_bf16
from .export import OnnxExportError, read_onnx_meta

__all__ = [
    "Backend",
    "EncoderError",
    "LoadedModel",
    "NoExportError",
    "StaleExportError",
    "find_export",
    "open_encoder",
]

Backend = Literal["auto", "torch", "onnx"]


class EncoderError(ValueError):
    """The encoder cannot be opened as asked (an export that does not fit, a missing runtime)."""


class NoExportError(EncoderError):
    """The onnx backend was asked for without an export to run."""


class StaleExportError(EncoderError):
    """The ONNX export was made from another checkpoint: export again, or run PyTorch."""


@dataclass(frozen=True)
class LoadedModel:
    encoder: Encoder
    config: SONANetConfig
    digest: str  # SHA-256 of the checkpoint file
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """``sona-net-r50-sona2+3-384x128@<first 12 hex digits of the checkpoint's SHA-256>``."""
        c = self.config
        stages = "+".join(map(str, c.sona_stages)) or "none"
        return (
            f"sona-net-r{c.depth}-sona{stages}-{c.input_size[0]}x{c.input_size[1]}"
            f"@{self.digest[:12]}"
        )


def find_export(
    checkpoint: Path, backend: Backend, onnx_model: Path | None, device: torch.device
) -> Path | None:
    """The ONNX export to run, or None for PyTorch.

    ``onnx_model`` when given (and ``backend`` is not ``torch``). Otherwise, with ``auto`` on a
    CPU, ``<checkpoint>.int8.onnx`` beside the checkpoint (what ``sona export --int8`` writes)
    when it exists: the fastest CPU path once it is made.
    """
    if backend == "torch":
        return None
    if onnx_model is not None:
        return Path(onnx_model)
    if backend == "onnx":
        raise NoExportError("the onnx backend needs an ONNX export (make one with sona export)")
    beside = Path(checkpoint).with_suffix(".int8.onnx")
    return beside if device.type == "cpu" and beside.is_file() else None


def _check_export(path: Path, digest: str) -> None:
    if not path.is_file():
        raise EncoderError(f"ONNX model not found: {path}")
    try:
        meta = read_onnx_meta(path)
    except OnnxExportError as exc:
        raise EncoderError(f"ONNX model {exc}") from exc
    exported_from = str(meta.get("checkpoint_sha256"))
    if exported_from != digest:
        raise StaleExportError(
            f"ONNX model {path} was exported from another checkpoint than the one served "
            f"({exported_from[:12]} != {digest[:12]}): export it again with sona export"
        )


def _onnx_encoder(path: Path, config: SONANetConfig, device: torch.device) -> Encoder:
    try:
        encoder = OnnxEncoder(path, device=device.type)
    except ImportError as exc:
        raise EncoderError("serving ONNX needs onnxruntime (pip install onnxruntime)") from exc
    except Exception as exc:  # onnxruntime's own errors: a corrupt or incompatible file
        raise EncoderError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
    if encoder.input_size != tuple(config.input_size) or encoder.dim != config.embedding_dim:
        raise EncoderError(f"{path} does not match the checkpoint's input size or dimension")
    return encoder


def _torch_encoder(net: torch.nn.Module, device: torch.device, amp: bool) -> Encoder:
    """PyTorch, channels_last, bf16 autocast where the device runs bf16 natively."""
    if device.type == "cuda":
        bf16 = amp and torch.cuda.is_bf16_supported()
    else:
        bf16 = amp and cpu_has_bf16()
    return TorchEncoder(net.to(device), device, bf16=bf16, channels_last=True)


def open_encoder(
    checkpoint: str | Path,
    *,
    onnx_model: str | Path | None = None,
    backend: Backend = "auto",
    device: str = "auto",
    amp: bool = True,
) -> LoadedModel:
    """The encoder to serve ``checkpoint`` with. Raises ``CheckpointError``, ``EncoderError``
    or ``DeviceError`` (all ``ValueError``) with a one-line reason."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:  # e.g. mode 0600 and another owner, seen through a container mount
        raise CheckpointError(f"cannot read the checkpoint {path}: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    payload = parse_checkpoint(data, path)
    del data
    where = resolve_device(device)
    export = find_export(path, backend, Path(onnx_model) if onnx_model else None, where)
    if export is not None:  # the weights live in the export: only the config is needed
        _check_export(export, digest)
        config = checkpoint_config(payload, path)
        encoder = _onnx_encoder(export, config, where)
    else:
        net = build_network(payload, path)
        config = net.config
        encoder = _torch_encoder(net, where, amp)
    return LoadedModel(encoder, config, digest, where, payload["meta"])
