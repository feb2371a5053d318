"""A procedural pedestrian dataset in the Market-1501 layout, for tests and demos.

Real re-ID data needs a download and a licence; tests and demos need something that is
generated in seconds and still measures learning. Each identity is a seeded set of clothing,
body and accessory parameters, each camera a seeded scene, illumination, colour cast, viewpoint
mix, framing, blur and occlusion rate. Identity cues survive across cameras only in
combination (colours come from a palette with near-duplicates, logos show only from the front,
backpacks mostly from the back), so raw pixels match poorly across cameras while a network that
learns the cues and discounts the camera does well.

Every image is drawn from its own random stream keyed by (seed, identity, camera, index), so the
output is the same bytes for a given seed on a given machine, independent of rendering order.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.datasets.base import DatasetError

__all__ = [
    "FORMAT",
    "METADATA_FILE",
    "SPLITS",
    "SyntheticSummary",
    "is_complete",
    "make_dataset",
    "read_metadata",
]

FORMAT = "market1501"
METADATA_FILE = "synthetic.json"
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
_VERSION = 1
_SCENE_WIDTHS, _SCENE_TALL = 8, 1.35  # a camera's scene, in crop widths and heights
_HAZE = 0.5  # how far background clutter is pulled toward the scene's base colour
_SUPERSAMPLE = 2  # draw at twice the size, then reduce: anti-aliased edges for little cost

# Stream tags keep the random streams of different purposes apart.
_T_IDENTITY, _T_CAMERA, _T_IMAGE, _T_SPLIT, _T_DISTRACTOR, _T_FRAME = 1, 2, 3, 4, 5, 6

RGB = tuple[int, int, int]

# Clothing palette: dark colours are commoner (as in real footage) and several entries are
# near-duplicates of each other, so that a colour alone rarely identifies a person.
_CLOTHES: list[tuple[RGB, float]] = [
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
_SKIN: list[RGB] = [
    (246, 214, 190),
    (232, 190, 160),
    (214, 164, 128),
    (184, 132, 96),
    (150, 100, 70),
    (112, 74, 50),
    (86, 58, 42),
]
_HAIR: list[RGB] = [
    (18, 16, 16),
    (34, 26, 22),
    (60, 42, 30),
    (96, 66, 40),
    (150, 110, 64),
    (196, 168, 110),
    (120, 120, 120),
    (200, 200, 200),
]
_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo")
_PATTERN_P = (0.4, 0.15, 0.1, 0.1, 0.25)
_HAIR_STYLES = ("short", "long", "bald", "hat")
_HAIR_STYLE_P = (0.5, 0.3, 0.08, 0.12)
_BOTTOMS = ("trousers", "shorts", "skirt")
_BOTTOM_P = (0.72, 0.16, 0.12)
_VIEWS = ("front", "back", "side")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _choice(rng: np.random.Generator, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


def _jitter(rng: np.random.Generator, colour: RGB, amount: float) -> RGB:
    return tuple(int(np.clip(c + rng.normal(0.0, amount), 0, 255)) for c in colour)  # type: ignore[return-value]


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(min(255, c * factor)) for c in colour)  # type: ignore[return-value]


def _clothing_colour(rng: np.random.Generator) -> RGB:
    weights = np.array([w for _, w in _CLOTHES])
    return _jitter(rng, _choice(rng, _CLOTHES, weights / weights.sum())[0], 7.0)


# --------------------------------------------------------------------------- parameters


@dataclass
class _Identity:
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


def _make_identity(rng: np.random.Generator) -> _Identity:
    top = _clothing_colour(rng)
    second = _clothing_colour(rng)
    # A stripe in the same colour as the shirt would be invisible: push it away.
    if sum(abs(a - b) for a, b in zip(top, second, strict=True)) < 120:
        second = tuple(255 - c for c in top)  # type: ignore[assignment]
    bag_roll = rng.random()
    bag_colour = _clothing_colour(rng)
    return _Identity(
        top=top,
        top_pattern=_choice(rng, _PATTERNS, _PATTERN_P),
        top_second=second,
        stripe_period=float(rng.uniform(0.035, 0.06)),
        long_sleeves=bool(rng.random() < 0.55),
        jacket_inner=_clothing_colour(rng) if rng.random() < 0.2 else None,
        bottom=_clothing_colour(rng),
        bottom_kind=_choice(rng, _BOTTOMS, _BOTTOM_P),
        skin=_jitter(rng, _choice(rng, _SKIN), 6.0),
        hair=_jitter(rng, _choice(rng, _HAIR), 5.0),
        hair_style=_choice(rng, _HAIR_STYLES, _HAIR_STYLE_P),
        hat=_clothing_colour(rng),
        shoes=_jitter(
            rng,
            _choice(
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


@dataclass
class _Camera:
    """What one camera does to every pedestrian it sees."""

    scene: Image.Image  # wider than a crop: each image takes a window at a random offset
    clutter: list[RGB]  # background-like colours for occluders
    views: np.ndarray  # probabilities of front, back, side
    fill: tuple[float, float]  # person height as a fraction of the crop height
    gains: np.ndarray  # colour cast, per channel
    brightness: float
    contrast: float
    saturation: float
    light: tuple[float, float]  # illumination slope across x and y
    blur: float  # Gaussian radius at the output size
    noise: float
    occlusion: float  # probability that an image is partly occluded


def _muted(rng: np.random.Generator, low: float, high: float, tint: float = 40.0) -> RGB:
    grey = rng.uniform(low, high)
    return tuple(int(np.clip(grey + rng.normal(0.0, tint), 0, 255)) for _ in range(3))  # type: ignore[return-value]


def _make_camera(rng: np.random.Generator, height: int, width: int) -> _Camera:
    # The scene is wider and taller than a crop: people cross the whole view, so what is behind
    # them changes from image to image even within one camera.
    scene_w, scene_h = width * _SCENE_WIDTHS, int(height * _SCENE_TALL)
    horizon = int(scene_h * rng.uniform(0.35, 0.6))
    top, mid = _muted(rng, 90, 220, 20), _muted(rng, 60, 190, 20)
    ground_a, ground_b = _muted(rng, 70, 170, 18), _muted(rng, 50, 150, 18)
    column = np.empty((scene_h, 3), dtype=np.float32)
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None]
    column[:horizon] = np.array(top) * (1 - t) + np.array(mid) * t
    t = np.linspace(0.0, 1.0, scene_h - horizon, dtype=np.float32)[:, None]
    column[horizon:] = np.array(ground_a) * (1 - t) + np.array(ground_b) * t
    base = np.repeat(column[:, None, :], scene_w, axis=1)
    base += rng.normal(0.0, 7.0, size=base.shape).astype(np.float32)
    scene = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(scene)
    clutter: list[RGB] = []
    for _ in range(int(rng.integers(4, 9) * _SCENE_WIDTHS)):  # windows, shops, signs, cars
        colour = _muted(rng, 30, 230, 45) if rng.random() < 0.8 else _clothing_colour(rng)
        w, h = rng.uniform(0.08, 0.6) * width, rng.uniform(0.04, 0.35) * height
        x, y = rng.uniform(-0.1, 1.0) * scene_w, rng.uniform(-0.05, 1.0) * horizon
        # Distance and haze wash the background out toward the sky/wall colour.
        behind = column[int(np.clip(y + h / 2, 0, scene_h - 1))]
        colour = tuple(int(c + (b - c) * _HAZE) for c, b in zip(colour, behind, strict=True))
        clutter.append(colour)
        draw.rectangle([x, y, x + w, y + h], fill=colour)
    for _ in range(int(rng.integers(1, 3) * _SCENE_WIDTHS)):  # poles and kerbs
        colour = _muted(rng, 20, 200, 20)
        if rng.random() < 0.5:
            x = rng.uniform(0, scene_w)
            draw.line(
                [(x, 0), (x, rng.uniform(horizon, scene_h))],
                fill=colour,
                width=int(rng.integers(2, 3 + width // 20)),
            )
        else:
            y = rng.uniform(horizon, scene_h)
            draw.line(
                [(0, y), (scene_w, y + rng.normal(0, height * 0.1))],
                fill=colour,
                width=int(rng.integers(2, 3 + height // 60)),
            )
    for _ in range(int(rng.integers(1, 4) * _SCENE_WIDTHS)):  # blotches on the ground
        colour = _muted(rng, 40, 180, 25)
        clutter.append(colour)
        x, y = rng.uniform(0, scene_w), rng.uniform(horizon, scene_h)
        r = rng.uniform(0.05, 0.25) * width
        draw.ellipse([x - 2 * r, y - r / 2, x + 2 * r, y + r / 2], fill=colour)
    scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    low = rng.uniform(0.72, 0.88)
    cast = rng.normal(0.0, 0.11, size=3)
    return _Camera(
        scene=scene,
        clutter=clutter,
        views=rng.dirichlet([1.2, 1.2, 1.2]),
        fill=(low, min(1.0, low + rng.uniform(0.08, 0.2))),
        gains=np.clip(1.0 + cast - cast.mean(), 0.72, 1.3).astype(np.float32),
        brightness=float(rng.uniform(0.65, 1.25)),
        contrast=float(rng.uniform(0.7, 1.15)),
        saturation=float(rng.uniform(0.55, 1.2)),
        light=(float(rng.normal(0, 0.2)), float(rng.normal(0, 0.2))),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(1.0, 6.0)),
        occlusion=float(rng.uniform(0.05, 0.3)),
    )


# --------------------------------------------------------------------------- drawing


def _poly(draw: ImageDraw.ImageDraw, points, colour: RGB) -> None:
    draw.polygon([(float(x), float(y)) for x, y in points], fill=colour)


def _limb(draw: ImageDraw.ImageDraw, a, b, w_a: float, w_b: float, colour: RGB) -> None:
    """A tapered quadrilateral from point a (width w_a) to point b (width w_b)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy) or 1.0
    px, py = -dy / n / 2, dx / n / 2
    _poly(
        draw,
        [
            (a[0] + px * w_a, a[1] + py * w_a),
            (b[0] + px * w_b, b[1] + py * w_b),
            (b[0] - px * w_b, b[1] - py * w_b),
            (a[0] - px * w_a, a[1] - py * w_a),
        ],
        colour,
    )


def _lerp(a, b, t: float):
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _patterned_torso(canvas: Image.Image, points, p: _Identity, u: float) -> None:
    """The torso polygon filled with the identity's top colour and pattern (through a mask)."""
    if p.top_pattern in ("plain", "logo"):
        _poly(ImageDraw.Draw(canvas), points, p.top)
        return
    xs, ys = [q[0] for q in points], [q[1] for q in points]
    x0, y0 = int(min(xs)) - 1, int(min(ys)) - 1
    w, h = int(max(xs)) - x0 + 2, int(max(ys)) - y0 + 2
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in points], fill=255)
    half = max(1.0, p.stripe_period * u / 2)
    rows = (np.arange(h) // half).astype(np.int32)[:, None] % 2
    cols = (np.arange(w) // half).astype(np.int32)[None, :] % 2
    second = {
        "hstripes": rows + 0 * cols,
        "vstripes": cols + 0 * rows,
        "checks": (rows + cols) % 2,
    }[p.top_pattern].astype(bool)
    tile = np.where(second[..., None], np.array(p.top_second, np.uint8), np.array(p.top, np.uint8))
    canvas.paste(Image.fromarray(tile), (x0, y0), mask)


def _draw_person(
    canvas: Image.Image,
    p: _Identity,
    view: str,
    facing: int,
    cx: float,
    top: float,
    u: float,
    rng: np.random.Generator,
) -> None:
    """Draw one pedestrian of height u whose head top is at (cx, top).

    facing: for side views, +1 walks to the right of the image, -1 to the left.
    """
    draw = ImageDraw.Draw(canvas)
    side = view == "side"
    swing = rng.normal(0.0, 0.035) * u
    stride = (rng.uniform(0.03, 0.13) if side else rng.uniform(0.0, 0.035)) * u
    head_h = p.head * u
    head_w = head_h * (0.82 if side else 0.74)
    y_sh = top + head_h + 0.025 * u
    y_waist = y_sh + p.torso * u
    y_foot = top + u
    shoe_h = 0.035 * u
    sw = p.shoulders * u * (0.55 if side else 1.0)
    hw = p.hips * u * (0.7 if side else 1.0)
    limb = 0.05 * u * p.build
    leg_w = hw * 0.95 if not side else limb * 1.5
    y_knee = y_waist + (y_foot - y_waist) * 0.5
    dark = 0.72  # the far limb in a side view is in shadow

    def leg(x_hip: float, x_foot: float, shade: float) -> None:
        hip, foot = (x_hip, y_waist - 0.01 * u), (x_foot, y_foot - shoe_h)
        knee = _lerp(hip, foot, 0.5)
        lower = p.skin if p.bottom_kind != "trousers" else p.bottom
        _limb(draw, knee, foot, leg_w * 0.85, leg_w * 0.7, _shade(lower, shade))
        if p.bottom_kind == "shorts":
            _limb(draw, hip, _lerp(hip, foot, 0.55), leg_w, leg_w * 0.9, _shade(p.bottom, shade))
        else:
            _limb(draw, hip, knee, leg_w, leg_w * 0.85, _shade(p.bottom, shade))
        sx = 0.05 * u * facing if side else 0.0
        sl = 0.07 * u if side else 0.045 * u
        draw.ellipse(
            [foot[0] - sl + sx, foot[1] - shoe_h * 0.3, foot[0] + sl + sx, foot[1] + shoe_h],
            fill=_shade(p.shoes, shade),
        )

    def arm(x_sh: float, x_hand: float, shade: float) -> None:
        sh, hand = (x_sh, y_sh + 0.02 * u), (x_hand, y_waist + 0.07 * u)
        elbow = _lerp(sh, hand, 0.48)
        fore = p.top if p.long_sleeves else p.skin
        _limb(draw, elbow, hand, limb * 0.95, limb * 0.8, _shade(fore, shade))
        _limb(draw, sh, elbow, limb * 1.1, limb, _shade(p.top, shade))
        r = limb * 0.55
        draw.ellipse(
            [hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r], fill=_shade(p.skin, shade)
        )

    # Backpack seen from the side sits behind the body: drawn first.
    if p.backpack is not None and side:
        bx = cx - facing * (sw + 0.055 * u)
        draw.rounded_rectangle(
            [min(bx, cx), y_sh + 0.02 * u, max(bx, cx), y_sh + 0.27 * u],
            radius=0.02 * u,
            fill=_shade(p.backpack, 0.9),
        )

    if side:
        leg(cx, cx - facing * stride, dark)
        arm(cx, cx - facing * swing * 2 - facing * 0.02 * u, dark)
        leg(cx, cx + facing * stride, 1.0)
    else:
        leg(cx - hw * 0.5, cx - hw * 0.55 - stride, 1.0)
        leg(cx + hw * 0.5, cx + hw * 0.55 + stride, 1.0)
        if p.bottom_kind == "skirt":
            _poly(
                draw,
                [
                    (cx - hw, y_waist - 0.01 * u),
                    (cx + hw, y_waist - 0.01 * u),
                    (cx + hw * 1.45, y_knee),
                    (cx - hw * 1.45, y_knee),
                ],
                p.bottom,
            )
        else:
            _poly(
                draw,
                [
                    (cx - hw, y_waist - 0.01 * u),
                    (cx + hw, y_waist - 0.01 * u),
                    (cx + hw, y_waist + 0.06 * u),
                    (cx - hw, y_waist + 0.06 * u),
                ],
                p.bottom,
            )
    if side and p.bottom_kind == "skirt":
        _poly(
            draw,
            [
                (cx - hw, y_waist - 0.01 * u),
                (cx + hw, y_waist - 0.01 * u),
                (cx + hw * 1.7, y_knee),
                (cx - hw * 1.7, y_knee),
            ],
            p.bottom,
        )

    # Torso (with pattern), then the front details.
    torso = [
        (cx - sw, y_sh),
        (cx + sw, y_sh),
        (cx + hw, y_waist + 0.01 * u),
        (cx - hw, y_waist + 0.01 * u),
    ]
    _patterned_torso(canvas, torso, p, u)
    r = sw * 0.3
    for x in (cx - sw + r * 0.7, cx + sw - r * 0.7):  # round shoulders
        draw.ellipse([x - r, y_sh - r * 0.25, x + r, y_sh + r * 1.2], fill=p.top)
    if view == "front":
        if p.jacket_inner is not None:
            _poly(
                draw,
                [
                    (cx - sw * 0.28, y_sh),
                    (cx + sw * 0.28, y_sh),
                    (cx + hw * 0.22, y_waist),
                    (cx - hw * 0.22, y_waist),
                ],
                p.jacket_inner,
            )
        if p.top_pattern == "logo":
            s = 0.045 * u
            lx, ly = cx + sw * 0.1, y_sh + 0.09 * u
            draw.rectangle([lx - s, ly - s * 0.8, lx + s, ly + s * 0.8], fill=p.top_second)
            draw.ellipse([lx - s * 0.45, ly - s * 0.45, lx + s * 0.45, ly + s * 0.45], fill=p.top)
        if p.backpack is not None:  # only the straps show
            for sgn in (-1, 1):
                draw.line(
                    [(cx + sgn * sw * 0.6, y_sh), (cx + sgn * sw * 0.5, y_sh + 0.2 * u)],
                    fill=_shade(p.backpack, 0.8),
                    width=max(1, int(0.022 * u)),
                )
    elif view == "back" and p.backpack is not None:
        draw.rounded_rectangle(
            [cx - sw * 0.78, y_sh + 0.025 * u, cx + sw * 0.78, y_sh + p.torso * u * 0.8],
            radius=0.025 * u,
            fill=p.backpack,
        )
        draw.line(
            [(cx - sw * 0.6, y_sh + 0.12 * u), (cx + sw * 0.6, y_sh + 0.12 * u)],
            fill=_shade(p.backpack, 0.7),
            width=max(1, int(0.01 * u)),
        )

    # Arms over the torso (near arm only in a side view).
    if side:
        arm(cx + facing * sw * 0.2, cx + facing * (swing * 2 + 0.02 * u), 1.0)
    else:
        arm(cx - sw + limb * 0.4, cx - sw - limb * 0.3 - abs(swing) * 0.3, 1.0)
        arm(cx + sw - limb * 0.4, cx + sw + limb * 0.3 + abs(swing) * 0.3, 1.0)

    # Handbag: hangs at the hip on its side (mirrored when seen from the back).
    if p.handbag is not None:
        hs = p.handbag_side * (-1 if view == "back" else 1)
        hx = cx + hs * (sw + limb * 0.9) if not side else cx + facing * 0.01 * u
        draw.line(
            [(cx + hs * sw * 0.6, y_sh), (hx, y_waist - 0.02 * u)],
            fill=_shade(p.handbag, 0.6),
            width=max(1, int(0.012 * u)),
        )
        bw, bh = 0.06 * u, 0.075 * u
        draw.rectangle(
            [hx - bw / 2, y_waist - 0.03 * u, hx + bw / 2, y_waist - 0.03 * u + bh], fill=p.handbag
        )

    # Neck, head, hair.
    nx = cx + (facing * 0.01 * u if side else 0.0)
    draw.rectangle(
        [nx - head_w * 0.22, top + head_h * 0.8, nx + head_w * 0.22, y_sh + 0.01 * u],
        fill=_shade(p.skin, 0.9),
    )
    hx0, hx1 = nx - head_w / 2, nx + head_w / 2
    if p.hair_style == "long" and view != "front":
        back_x = nx - facing * head_w * 0.35 if side else nx
        draw.rounded_rectangle(
            [back_x - head_w * 0.5, top + head_h * 0.3, back_x + head_w * 0.5, y_sh + 0.09 * u],
            radius=head_w * 0.3,
            fill=p.hair,
        )
    face = p.skin if view != "back" else p.hair
    if view == "back" and p.hair_style in ("bald", "hat"):
        face = p.skin
    draw.ellipse([hx0, top, hx1, top + head_h], fill=face)
    if p.hair_style in ("short", "long"):
        if view == "front":
            draw.chord([hx0, top, hx1, top + head_h], 180, 360, fill=p.hair)
            if p.hair_style == "long":
                for x in (hx0 - head_w * 0.05, hx1 - head_w * 0.25):
                    draw.rectangle(
                        [x, top + head_h * 0.4, x + head_w * 0.3, top + head_h * 1.25], fill=p.hair
                    )
        elif side:
            # From the nape round the back of the head to the forehead.
            start, end = (120, 330) if facing > 0 else (210, 60)
            draw.pieslice([hx0, top, hx1, top + head_h], start, end, fill=p.hair)
    elif p.hair_style == "hat":
        draw.chord(
            [hx0 - head_w * 0.04, top - head_h * 0.05, hx1 + head_w * 0.04, top + head_h * 0.95],
            180,
            360,
            fill=p.hat,
        )
        bx = facing * head_w * 0.3 if side else 0.0
        draw.rectangle(
            [
                hx0 - head_w * 0.08 + bx,
                top + head_h * 0.36,
                hx1 + head_w * 0.08 + bx,
                top + head_h * 0.46,
            ],
            fill=_shade(p.hat, 0.8),
        )


# --------------------------------------------------------------------------- one image


def _render(
    p: _Identity,
    cam: _Camera,
    size: tuple[int, int],
    rng: np.random.Generator,
    bad_detection: bool = False,
) -> Image.Image:
    """One crop of identity p seen by camera cam, at size (height, width)."""
    height, width = size
    big_h, big_w = height * _SUPERSAMPLE, width * _SUPERSAMPLE
    ox = int(rng.integers(0, cam.scene.width - big_w + 1))
    oy = int(rng.integers(0, cam.scene.height - big_h + 1))
    canvas = cam.scene.crop((ox, oy, ox + big_w, oy + big_h))
    view = _VIEWS[int(rng.choice(3, p=cam.views))]
    facing = int(rng.choice([-1, 1]))
    fill = rng.uniform(*cam.fill)
    u = big_h * fill
    cx = big_w / 2 + rng.normal(0.0, 0.05) * big_w
    margin = big_h - u
    top = margin * rng.uniform(0.15, 0.85) if margin > 0 else 0.0
    if bad_detection:  # Market's 0000 crops: a poor box on part of a person
        u *= rng.uniform(1.3, 2.2)
        top -= rng.uniform(0.0, u - big_h * 0.6)
        cx += rng.normal(0.0, 0.25) * big_w
    _draw_person(canvas, p, view, facing, cx, top, u, rng)

    if rng.random() < cam.occlusion:  # something of background colour in front of the person
        colour = cam.clutter[int(rng.integers(len(cam.clutter)))]
        draw = ImageDraw.Draw(canvas)
        if rng.random() < 0.6:  # from below: a car, a bench, a railing
            y0 = min(top + u * rng.uniform(0.55, 0.8), big_h * 0.9)
            draw.rectangle([-1, y0, big_w + 1, big_h + 1], fill=colour)
        else:  # from one side: a pillar, another passer-by
            wid = big_w * rng.uniform(0.25, 0.45)
            x0 = -1 if rng.random() < 0.5 else big_w - wid
            draw.rectangle([x0, -1, x0 + wid, big_h + 1], fill=colour)

    small = canvas.reduce(_SUPERSAMPLE)
    blur = cam.blur * rng.uniform(0.7, 1.3)
    if blur > 0.25:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(small, dtype=np.float32)
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + (arr - grey) * cam.saturation
    gain = cam.gains * (cam.brightness * rng.uniform(0.9, 1.1))
    arr = (arr * gain - 110.0) * (cam.contrast * rng.uniform(0.95, 1.05)) + 110.0
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :, None]
    arr *= 1.0 + cam.light[0] * xs + cam.light[1] * ys
    arr += rng.normal(0.0, cam.noise, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- dataset


@dataclass
class SyntheticSummary:
    """What make_dataset wrote: where, how much, and how long it took."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def __str__(self) -> str:
        c = self.counts
        return "\n".join(
            [
                f"synthetic Market-1501-style dataset at {self.root} ({self.elapsed_s:.1f} s)",
                f"  train    {c['train_identities']:>6} ids {c['train_images']:>7} images",
                f"  query    {c['query_identities']:>6} ids {c['query_images']:>7} images",
                f"  gallery  {c['gallery_identities']:>6} ids {c['gallery_images']:>7} images "
                f"(of which {c['distractor_images']} distractors labelled 0000)",
            ]
        )


def is_complete(root: str | os.PathLike[str]) -> bool:
    """True when root holds a finished synthetic dataset (its metadata is written last)."""
    return (Path(root) / METADATA_FILE).is_file()


def read_metadata(root: str | os.PathLike[str]) -> dict:
    """The parameters and counts of a finished dataset; an interrupted one raises DatasetError."""
    path = Path(root) / METADATA_FILE
    if not path.is_file():
        raise DatasetError(
            f"{root}: no {METADATA_FILE}; not a synthetic dataset, or its "
            "generation was interrupted (regenerate with overwrite)"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{path}: unexpected format {meta.get('format')!r}")
    return meta


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            state = (
                "a synthetic dataset"
                if is_complete(root)
                else "an incomplete synthetic dataset"
                if any((root / s).exists() for s in SPLITS)
                else "other files"
            )
            raise FileExistsError(
                f"{root} is not empty (it holds {state}); "
                "pass overwrite=True (--overwrite) to replace it"
            )
        # Metadata first: if clearing is interrupted, the folder reads as incomplete.
        (root / METADATA_FILE).unlink(missing_ok=True)
        for split in SPLITS:
            if (root / split).is_dir():
                shutil.rmtree(root / split)
            elif (root / split).exists():
                (root / split).unlink()
    for split in SPLITS:
        (root / split).mkdir(parents=True, exist_ok=True)


def make_dataset(
    root: str | os.PathLike[str],
    identities: int = 100,
    cameras: int = 6,
    *,
    images_per_camera: int = 3,
    distractors: int | None = None,
    image_size: tuple[int, int] = (128, 64),
    seed: int = 0,
    train_fraction: float = 0.5,
    quality: int = 90,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write a seeded synthetic re-ID dataset under root in the Market-1501 layout.

    Identities 1..n_train go to bounding_box_train; the rest are test identities, each with one
    query per camera it appears in and its other images in bounding_box_test, plus
    ``distractors`` extra identities (default identities // 5) labelled 0000 in the gallery.
    Every identity appears in at least two cameras, so every query has a cross-camera match.
    synthetic.json is written last; a folder without it is an interrupted run.
    """
    start = time.perf_counter()
    if distractors is None:
        distractors = identities // 5
    height, width = (int(v) for v in image_size)
    n_train = round(identities * train_fraction)
    if not 2 <= cameras <= 9:
        raise ValueError(
            f"cameras must be 2..9 (a Market name holds one camera digit), got {cameras}"
        )
    if identities < 2 or identities > 9999:
        raise ValueError(f"identities must be 2..9999, got {identities}")
    if not 1 <= n_train < identities:
        raise ValueError(
            f"train_fraction {train_fraction} leaves no train or no test identity "
            f"out of {identities}"
        )
    if images_per_camera < 2:
        raise ValueError("images_per_camera must be at least 2 (one query, one gallery image)")
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    if (identities + distractors) * images_per_camera > 999_000:
        raise ValueError("too many images for Market's six-digit frame numbers")
    if height < 16 or width < 8:
        raise ValueError(f"image_size must be at least 16x8, got {height}x{width}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1..100, got {quality}")

    root = Path(root)
    _prepare(root, overwrite)
    big = (height * _SUPERSAMPLE, width * _SUPERSAMPLE)
    cams = [_make_camera(_rng(seed, _T_CAMERA, c), *big) for c in range(cameras)]
    # Frame numbers rise through each camera's footage and must stay within six digits.
    per_camera = (identities + distractors) * images_per_camera
    step = min(40, 999_000 // per_camera)
    frames = [int(_rng(seed, _T_CAMERA, c, 1).integers(1, 500)) for c in range(cameras)]
    counts = dict.fromkeys(
        ("train_images", "query_images", "gallery_images", "distractor_images"), 0
    )

    def write(split: str, pid: int, cam: int, image: Image.Image) -> None:
        frames[cam] += int(_rng(seed, _T_FRAME, pid, cam, frames[cam]).integers(1, step + 1))
        name = f"{pid:04d}_c{cam + 1}s1_{frames[cam]:06d}_01.jpg"
        image.save(root / split / name, format="JPEG", quality=quality)

    def camera_subset(rng: np.random.Generator, minimum: int, maximum: int) -> list[int]:
        k = int(rng.integers(minimum, maximum + 1))
        return sorted(int(c) for c in rng.choice(cameras, size=k, replace=False))

    for pid in range(1, identities + 1):
        person = _make_identity(_rng(seed, _T_IDENTITY, pid))
        test = pid > n_train
        for cam in camera_subset(_rng(seed, _T_SPLIT, pid), 2, cameras):
            query_k = int(_rng(seed, _T_SPLIT, pid, cam).integers(images_per_camera))
            for k in range(images_per_camera):
                rng = _rng(seed, _T_IMAGE, pid, cam, k)
                image = _render(person, cams[cam], (height, width), rng)
                split = (
                    "bounding_box_train"
                    if not test
                    else "query"
                    if k == query_k
                    else "bounding_box_test"
                )
                write(split, pid, cam, image)
                key = {
                    "bounding_box_train": "train_images",
                    "query": "query_images",
                    "bounding_box_test": "gallery_images",
                }[split]
                counts[key] += 1

    for d in range(distractors):
        person = _make_identity(_rng(seed, _T_DISTRACTOR, d))
        for cam in camera_subset(_rng(seed, _T_DISTRACTOR, d, 1), 1, 2):
            for k in range(images_per_camera):
                rng = _rng(seed, _T_DISTRACTOR, d, cam, k)
                image = _render(
                    person, cams[cam], (height, width), rng, bad_detection=bool(rng.random() < 0.4)
                )
                write("bounding_box_test", 0, cam, image)
                counts["gallery_images"] += 1
                counts["distractor_images"] += 1

    counts |= {
        "train_identities": n_train,
        "query_identities": identities - n_train,
        "gallery_identities": identities - n_train,
        "distractor_identities": distractors,
    }
    meta = {
        "format": FORMAT,
        "generator": "training.synthetic",
        "version": _VERSION,
        "seed": seed,
        "parameters": {
            "identities": identities,
            "cameras": cameras,
            "images_per_camera": images_per_camera,
            "distractors": distractors,
            "image_size": [height, width],
            "train_fraction": train_fraction,
            "quality": quality,
        },
        "counts": counts,
        "splits": {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"},
    }
    tmp = root / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, root / METADATA_FILE)
    return SyntheticSummary(root=root, counts=counts, elapsed_s=time.perf_counter() - start)
