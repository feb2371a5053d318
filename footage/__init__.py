"""Camera footage to a searchable gallery: decode, find people, track them, choose a few good
crops per track, and index them through the service's HTTP API (``sona footage add``).

One module per step: ``decode`` (videos and image sequences), ``detect`` (HOG, torchvision,
MOTChallenge ``det.txt``), ``track`` (IoU and motion association), ``choose`` (crop choice),
``upload`` (tracks to the service through the client), ``state`` (resumable runs), ``ingest`` (the
pipeline). It talks to the service only through the public API; nothing here imports it.
"""

from __future__ import annotations

from .errors import FootageError

__all__ = ["FootageError"]
