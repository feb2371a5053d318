"""Which device the network runs on: the one rule for training, evaluation and serving."""

from __future__ import annotations

import os

import torch

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(ValueError):
    """The requested device does not exist here; the message says which and why."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: this process's CUDA device when there is one (``LOCAL_RANK`` under torchrun),
    else the CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given, refused if CUDA is absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name} asked for, but no CUDA device is available")
    return device
