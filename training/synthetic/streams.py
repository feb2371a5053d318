"""Seeded random streams: every image, identity and camera draws from its own.

A stream is keyed by (seed, tag, ...), so what one image draws never depends on how many
others were drawn before it: the output is the same bytes in any rendering order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CAMERA", "DISTRACTOR", "FRAME", "IDENTITY", "IMAGE", "SPLIT", "choice", "stream"]

# Tags keep the random streams of different purposes apart.
IDENTITY, CAMERA, IMAGE, SPLIT, DISTRACTOR, FRAME = 1, 2, 3, 4, 5, 6


def stream(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of one purpose (a tag and its keys) under ``seed``."""
    return np.random.default_rng([seed, *keys])


def choice(rng: np.random.Generator, items, p=None):
    """One of ``items``, with probabilities ``p`` (uniform by default)."""
    return items[int(rng.choice(len(items), p=p))]
