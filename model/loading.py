"""Open an encoder from plain values: checkpoint, optional ONNX export, backend, device, AMP.

The checkpoint is read and hashed once: its SHA-256 names the model and ties an ONNX export to
the checkpoint it came from, so a service never serves an export of another model. With the
``auto`` backend on a CPU, an export runs in whichever installed runtime (ONNX Runtime,
OpenVINO) a short probe finds fastest on this CPU (``model.choice``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .checkpoint import CheckpointError, build_network, checkpoint_config, parse_checkpoint
from .choice import EncoderChoice, probe_fastest
from .config import SONANetConfig
from .cpu import cpu_has_bf16, cpu_info
from .device import resolve_device
from .encoders import Encoder, OnnxEncoder, OpenVinoEncoder, TorchEncoder
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

Backend = Literal["auto", "torch", "onnx", "openvino"]
#: The runtimes that can run an export, by backend name; ``onnx`` is ONNX Runtime.
EXPORT_RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}


class EncoderError(ValueError):
    """The encoder cannot be opened as asked (an export that does not fit, a missing runtime)."""


class NoExportError(EncoderError):
    """The onnx or openvino backend was asked for without an export to run."""


class StaleExportError(EncoderError):
    """The ONNX export was made from another checkpoint: export again, or run PyTorch."""


@dataclass(frozen=True)
class LoadedModel:
    encoder: Encoder
    config: SONANetConfig
    digest: str  # SHA-256 of the checkpoint file
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)
    choice: EncoderChoice | None = None

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

    ``onnx_model`` when given (and ``backend`` is not ``torch``). Otherwise
    ``<checkpoint>.int8.onnx`` beside the checkpoint (what ``sona export --int8`` writes) when
    it exists: with ``onnx`` or ``openvino``, and with ``auto`` on a CPU, where it is the
    fastest path once it is made.
    """
    if backend == "torch":
        return None
    if onnx_model is not None:
        return Path(onnx_model)
    beside = Path(checkpoint).with_suffix(".int8.onnx")
    if backend in EXPORT_RUNTIMES:
        if beside.is_file():
            return beside
        raise NoExportError(
            f"SONA_BACKEND={backend} needs an export: SONA_ONNX_MODEL, or {beside.name} beside "
            "the checkpoint (make one with sona export --int8)"
        )
    return beside if device.type == "cpu" and beside.is_file() else None


def _check_export(path: Path, digest: str) -> dict[str, Any]:
    """The export's metadata, once it is known to come from the checkpoint served."""
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
    return meta


def _export_encoder(
    runtime: str,
    path: Path,
    meta: dict[str, Any],
    config: SONANetConfig,
    device: torch.device,
    amp: bool,
) -> Encoder:
    """``path`` (whose metadata is ``meta``) in ``runtime`` (onnxruntime or openvino), checked
    against the checkpoint."""
    try:
        if runtime == "openvino":
            if device.type != "cpu":
                raise EncoderError("the openvino backend runs on the CPU (SONA_DEVICE=cpu)")
            # an int8 export's remaining layers run faster in fp32 than in bf16 on AMX
            int8 = meta.get("precision") == "int8"
            bf16 = amp and cpu_has_bf16() and not int8
            encoder: Encoder = OpenVinoEncoder(path, bf16=bf16, meta=meta)
        else:
            encoder = OnnxEncoder(path, device=device.type)
    except ImportError as exc:
        raise EncoderError(f"serving an export in {runtime} needs pip install {runtime}") from exc
    except EncoderError:
        raise
    except Exception as exc:  # the runtimes' own errors: a corrupt or incompatible file
        raise EncoderError(f"{path}: {runtime} cannot load it ({exc})") from exc
    if encoder.input_size != tuple(config.input_size) or encoder.dim != config.embedding_dim:
        raise EncoderError(f"{path} does not match the checkpoint's input size or dimension")
    return encoder


def installed_export_runtimes() -> list[str]:
    """The runtimes that can run an export here."""
    return [e.runtime for e in (OnnxEncoder, OpenVinoEncoder) if e.available()]


def _choose_export_runtime(
    path: Path,
    meta: dict[str, Any],
    config: SONANetConfig,
    device: torch.device,
    amp: bool,
    backend: Backend,
    probe_cache: Path | None,
) -> tuple[Encoder, EncoderChoice]:
    """The backend's runtime when it names one; with ``auto``, the probe's fastest."""
    if backend in EXPORT_RUNTIMES:
        runtime = EXPORT_RUNTIMES[backend]
        encoder = _export_encoder(runtime, path, meta, config, device, amp)
        return encoder, EncoderChoice(runtime, "setting", f"SONA_BACKEND={backend}")
    runtimes = installed_export_runtimes() if device.type == "cpu" else ["onnxruntime"]
    if len(runtimes) < 2:
        runtime = runtimes[0] if runtimes else "onnxruntime"
        encoder = _export_encoder(runtime, path, meta, config, device, amp)
        why = "the only runtime installed for an export" if device.type == "cpu" else "CUDA"
        return encoder, EncoderChoice(runtime, "only candidate", why)
    factories = {
        runtime: (lambda r=runtime: _export_encoder(r, path, meta, config, device, amp))
        for runtime in runtimes
    }
    return probe_fastest(path, factories, cache=probe_cache)


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
    probe_cache: str | Path | None = None,
) -> LoadedModel:
    """The encoder to serve ``checkpoint`` with. Raises ``CheckpointError``, ``EncoderError``
    or ``DeviceError`` (all ``ValueError``) with a one-line reason.

    ``probe_cache``: a JSON file where the ``auto`` backend keeps what its probe measured.
    """
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
        meta = _check_export(export, digest)
        config = checkpoint_config(payload, path)
        cache = Path(probe_cache) if probe_cache else None
        encoder, choice = _choose_export_runtime(export, meta, config, where, amp, backend, cache)
    else:
        net = build_network(payload, path)
        config = net.config
        encoder = _torch_encoder(net, where, amp)
        choice = _torch_choice(encoder, backend, where)
    return LoadedModel(encoder, config, digest, where, payload["meta"], choice)


def _torch_choice(encoder: Encoder, backend: Backend, device: torch.device) -> EncoderChoice:
    precision = "bf16" if "bf16" in encoder.name else "fp32"
    if backend == "torch":
        return EncoderChoice("torch", "setting", f"SONA_BACKEND=torch ({precision})")
    where = "CUDA" if device.type == "cuda" else f"this {cpu_info().isa_class} CPU"
    return EncoderChoice(
        "torch",
        "no export",
        f"no export beside the checkpoint (sona export --int8 makes one); PyTorch {precision} "
        f"on {where}",
    )
