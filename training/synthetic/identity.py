"""Identities: the clothing, body and accessories that make one pedestrian recognisable."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .palette import HAIR, RGB, SKIN, clothing_colour, jitter
from .streams import choice

__all__ = ["Identity", "make_identity"]

_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo")
_PATTERN_P = (0.4, 0.15, 0.1, 0.1, 0.25)
_HAIR_STYLES = ("short", "long", "bald", "hat")
_HAIR_STYLE_P = (0.5, 0.3, 0.08, 0.12)
_BOTTOMS = ("trousers", "shorts", "skirt")
_BOTTOM_P = (0.72, 0.16, 0.12)


@dataclass
class Identity:
    """What makes one pedestrian recognisable from any camera."""

    top: RGB
    top_pattern: str
    top_second: RGB  # stripe/check/logo colour
    stripe_period: float  # in person heights
    long_sleeves: bool
    jacket_inner: RGB | None  # an open jacket shows this colour down the chest, from the front
    bottom: RGB
    bottom_kind: str
    skin: RGB
    hair: RGB
    hair_style: str
    hat: RGB
    shoes: RGB
    head: float  # head height, in person heights
    shoulders: float  # shoulder half-width, in person heights
    hips: float
    torso: float  # shoulder-to-waist length, in person heights
    build: float  # limb thickness factor
    backpack: RGB | None
    handbag: RGB | None
    handbag_side: int  # -1: the person's right, +1: their left (as seen from the front)


def make_identity(rng: np.random.Generator) -> Identity:
    top = clothing_colour(rng)
    second = clothing_colour(rng)
    # A stripe in the same colour as the shirt would be invisible: push it away.
    if sum(abs(a - b) for a, b in zip(top, second, strict=True)) < 120:
        second = tuple(255 - c for c in top)  # type: ignore[assignment]
    bag_roll = rng.random()
    bag_colour = clothing_colour(rng)
    return Identity(
        top=top,
        top_pattern=choice(rng, _PATTERNS, _PATTERN_P),
        top_second=second,
        stripe_period=float(rng.uniform(0.035, 0.06)),
        long_sleeves=bool(rng.random() < 0.55),
        jacket_inner=clothing_colour(rng) if rng.random() < 0.2 else None,
        bottom=clothing_colour(rng),
        bottom_kind=choice(rng, _BOTTOMS, _BOTTOM_P),
        skin=jitter(rng, choice(rng, SKIN), 6.0),
        hair=jitter(rng, choice(rng, HAIR), 5.0),
        hair_style=choice(rng, _HAIR_STYLES, _HAIR_STYLE_P),
        hat=clothing_colour(rng),
        shoes=jitter(
            rng,
            choice(
                rng,
                [
                    (20, 20, 20),
                    (60, 40, 30),
                    (230, 230, 230),
                    (40, 40, 110),
                    (150, 30, 30),
                    (120, 120, 120),
                ],
                [0.4, 0.15, 0.2, 0.1, 0.05, 0.1],
            ),
            8.0,
        ),
        head=float(rng.uniform(0.115, 0.14)),
        shoulders=float(rng.uniform(0.11, 0.16)),
        hips=float(rng.uniform(0.08, 0.12)),
        torso=float(rng.uniform(0.27, 0.34)),
        build=float(rng.uniform(0.85, 1.2)),
        backpack=bag_colour if bag_roll < 0.25 else None,
        handbag=bag_colour if 0.25 <= bag_roll < 0.4 else None,
        handbag_side=int(rng.choice([-1, 1])),
    )
