"""Colours: what people wear and what backgrounds look like.

Dark clothes are commoner (as in real footage) and several entries are near-duplicates of each
other, so that a colour alone rarely identifies a person.
"""

from __future__ import annotations

import numpy as np

from .streams import choice

__all__ = ["CLOTHES", "HAIR", "RGB", "SKIN", "clothing_colour", "jitter", "muted", "shade"]

RGB = tuple[int, int, int]

CLOTHES: list[tuple[RGB, float]] = [
    ((22, 22, 26), 4.0),
    ((40, 40, 46), 3.0),
    ((62, 60, 64), 2.0),
    ((95, 95, 100), 2.0),
    ((140, 140, 145), 1.5),
    ((190, 190, 192), 1.0),
    ((236, 236, 232), 2.0),
    ((222, 214, 196), 1.0),
    ((24, 32, 72), 2.5),
    ((32, 46, 98), 2.0),
    ((44, 84, 168), 1.5),
    ((116, 156, 206), 1.0),
    ((168, 30, 36), 1.2),
    ((136, 22, 44), 1.0),
    ((96, 28, 36), 0.8),
    ((222, 140, 160), 0.7),
    ((224, 120, 40), 0.7),
    ((226, 196, 52), 0.6),
    ((104, 108, 52), 0.8),
    ((46, 118, 60), 0.8),
    ((30, 70, 44), 0.8),
    ((178, 156, 112), 1.0),
    ((104, 70, 44), 1.0),
    ((200, 176, 140), 0.8),
    ((92, 50, 120), 0.6),
    ((60, 100, 110), 0.6),
]
SKIN: list[RGB] = [
    (246, 214, 190),
    (232, 190, 160),
    (214, 164, 128),
    (184, 132, 96),
    (150, 100, 70),
    (112, 74, 50),
    (86, 58, 42),
]
HAIR: list[RGB] = [
    (18, 16, 16),
    (34, 26, 22),
    (60, 42, 30),
    (96, 66, 40),
    (150, 110, 64),
    (196, 168, 110),
    (120, 120, 120),
    (200, 200, 200),
]


def jitter(rng: np.random.Generator, colour: RGB, amount: float) -> RGB:
    """``colour`` with Gaussian noise per channel: no two garments quite alike."""
    return tuple(int(np.clip(c + rng.normal(0.0, amount), 0, 255)) for c in colour)  # type: ignore[return-value]


def shade(colour: RGB, factor: float) -> RGB:
    """``colour`` darkened (or lightened) by ``factor``, for limbs in shadow and trims."""
    return tuple(int(min(255, c * factor)) for c in colour)  # type: ignore[return-value]


def clothing_colour(rng: np.random.Generator) -> RGB:
    """A garment colour drawn from ``CLOTHES`` by its weights, then jittered."""
    weights = np.array([w for _, w in CLOTHES])
    return jitter(rng, choice(rng, CLOTHES, weights / weights.sum())[0], 7.0)


def muted(rng: np.random.Generator, low: float, high: float, tint: float = 40.0) -> RGB:
    """A greyish background colour between ``low`` and ``high``, tinted up to ``tint``."""
    grey = rng.uniform(low, high)
    return tuple(int(np.clip(grey + rng.normal(0.0, tint), 0, 255)) for _ in range(3))  # type: ignore[return-value]
