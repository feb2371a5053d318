"""One-file checkpoints: configuration, weights and metadata, loaded without unpickling code.

The file is a ``torch.save`` of plain containers and tensors. Loading goes through
``torch.load(weights_only=True)``, whose unpickler admits tensors and plain values only, so a
file carrying any other object is refused before anything in it runs. Writes go to a
temporary file that is fsynced and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import SONANetConfig
from .sona_net import SONANet

__all__ = [
    "CheckpointError",
    "atomic_torch_save",
    "build_network",
    "checkpoint_config",
    "checkpoint_payload",
    "file_sha256",
    "load_checkpoint",
    "looks_like_torch_file",
    "parse_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "sona-net"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason in one line."""


def checkpoint_payload(net: SONANet, **meta: Any) -> dict[str, Any]:
    """The dict a checkpoint file holds; callers may add keys (training adds its state)."""
    try:
        meta = json.loads(json.dumps(meta))
    except TypeError as exc:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {exc}") from exc
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": meta,
    }


def save_checkpoint(path: str | Path, net: SONANet, **meta: Any) -> Path:
    """Write ``net`` (config and weights) and JSON-serialisable ``meta`` to ``path`` atomically."""
    return atomic_torch_save(checkpoint_payload(net, **meta), path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask), not mkstemp's 0o600, which
    hides a checkpoint from another user that serves it (the image's user, through a mount)."""
    umask = os.umask(0o077)  # reading the umask sets it: the stricter value for the moment
    os.umask(umask)
    return 0o666 & ~umask


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, hex: names a model and ties an ONNX export to its checkpoint."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def looks_like_torch_file(data: bytes) -> bool:
    """``torch.save`` writes a zip archive (a legacy one, a pickle stream): either start."""
    return data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw payload of a SONA-Net checkpoint, validated but not yet turned into a network."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return parse_checkpoint(path.read_bytes(), path)


def parse_checkpoint(data: bytes, path: str | Path) -> dict[str, Any]:
    """``read_checkpoint`` of bytes already read (``path`` names them in errors)."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False; never pass that on. Name the object.
        found = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", str(exc))
        if found is None:
            raise CheckpointError(
                f"{path}: not a readable checkpoint (corrupt pickle data)"
            ) from exc
        raise CheckpointError(
            f"{path}: refused, it holds an object other than tensors and plain values "
            f"({found.group(1)}); loading it could run arbitrary code"
        ) from exc
    except Exception as exc:
        if not looks_like_torch_file(data):  # a text file, an image: torch says "KeyError: 101"
            raise CheckpointError(
                f"{path}: not a readable checkpoint: not a file written by torch.save (a "
                "SONA-Net checkpoint is the best.pt or last.pt that sona train writes)"
            ) from exc
        first = str(exc).split(". ")[0]  # torch's messages go on for several sentences
        raise CheckpointError(
            f"{path}: not a readable checkpoint: damaged or cut short ({type(exc).__name__}: "
            f"{first})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a SONA-Net checkpoint (no '{FORMAT}' format marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r} is not "
            f"supported (this version reads {FORMAT_VERSION})"
        )
    for key, kind in (("config", dict), ("state_dict", dict), ("meta", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: checkpoint has no valid '{key}'")
    return payload


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[SONANet, dict[str, Any]]:
    """Rebuild the network from a checkpoint, in eval mode on ``device``; returns (net, meta)."""
    payload = read_checkpoint(path)
    return build_network(payload, path).to(device), payload["meta"]


def checkpoint_config(payload: dict[str, Any], path: str | Path) -> SONANetConfig:
    """The configuration a checkpoint's payload holds."""
    try:
        return SONANetConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid configuration: {exc}") from exc


def build_network(payload: dict[str, Any], path: str | Path) -> SONANet:
    """The network of a payload from ``read_checkpoint``, on the CPU, in eval mode."""
    config = checkpoint_config(payload, path)
    net = SONANet(config, load_backbone_weights=False)
    expected = net.state_dict()
    state = payload["state_dict"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(state) & set(expected)
        if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} weights missing (e.g. {missing[:3]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in wrong[:2]]
            detail.append(f"{len(wrong)} of the wrong shape (e.g. {shapes})")
        raise CheckpointError(
            f"{path}: weights do not match the configuration they were saved with: "
            + "; ".join(detail)
        )
    net.load_state_dict(state, strict=True)
    return net.eval()
