"""One pedestrian drawn on a canvas, part by part, in the order that makes the overlaps right.

The figure's proportions are computed once (``_Figure``); each part reads them. Far limbs
first, then the body, near limbs, bags and head, so that what is nearer covers what is behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .identity import Identity
from .palette import shade
from .shapes import lerp, limb, patterned_torso, poly

__all__ = ["draw_person"]

_DARK = 0.72  # the far limb in a side view is in shadow


@dataclass(frozen=True)
class _Figure:
    """Where a pedestrian of height u with head top at (cx, top) has each body landmark."""

    view: str
    facing: int
    cx: float
    top: float
    u: float
    swing: float
    stride: float
    head_h: float
    head_w: float
    y_sh: float
    y_waist: float
    y_foot: float
    shoe_h: float
    sw: float
    hw: float
    limb: float
    leg_w: float
    y_knee: float

    @property
    def side(self) -> bool:
        return self.view == "side"


def _figure(
    p: Identity,
    view: str,
    facing: int,
    cx: float,
    top: float,
    u: float,
    rng: np.random.Generator,
) -> _Figure:
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
    limb_w = 0.05 * u * p.build
    leg_w = hw * 0.95 if not side else limb_w * 1.5
    y_knee = y_waist + (y_foot - y_waist) * 0.5
    return _Figure(
        view, facing, cx, top, u, swing, stride, head_h, head_w, y_sh, y_waist, y_foot,
        shoe_h, sw, hw, limb_w, leg_w, y_knee,
    )  # fmt: skip


def draw_person(
    canvas: Image.Image,
    p: Identity,
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
    f = _figure(p, view, facing, cx, top, u, rng)
    draw = ImageDraw.Draw(canvas)
    _lower_body(draw, p, f)
    _torso(canvas, draw, p, f)
    _arms_and_handbag(draw, p, f)
    _head(draw, p, f)


def _leg(draw: ImageDraw.ImageDraw, p: Identity, f: _Figure, x_hip, x_foot, shade_f) -> None:
    u, side, facing, leg_w, shoe_h = f.u, f.side, f.facing, f.leg_w, f.shoe_h
    hip, foot = (x_hip, f.y_waist - 0.01 * u), (x_foot, f.y_foot - shoe_h)
    knee = lerp(hip, foot, 0.5)
    lower = p.skin if p.bottom_kind != "trousers" else p.bottom
    limb(draw, knee, foot, leg_w * 0.85, leg_w * 0.7, shade(lower, shade_f))
    if p.bottom_kind == "shorts":
        limb(draw, hip, lerp(hip, foot, 0.55), leg_w, leg_w * 0.9, shade(p.bottom, shade_f))
    else:
        limb(draw, hip, knee, leg_w, leg_w * 0.85, shade(p.bottom, shade_f))
    sx = 0.05 * u * facing if side else 0.0
    sl = 0.07 * u if side else 0.045 * u
    draw.ellipse(
        [foot[0] - sl + sx, foot[1] - shoe_h * 0.3, foot[0] + sl + sx, foot[1] + shoe_h],
        fill=shade(p.shoes, shade_f),
    )


def _arm(draw: ImageDraw.ImageDraw, p: Identity, f: _Figure, x_sh, x_hand, shade_f) -> None:
    u, limb_w = f.u, f.limb
    sh, hand = (x_sh, f.y_sh + 0.02 * u), (x_hand, f.y_waist + 0.07 * u)
    elbow = lerp(sh, hand, 0.48)
    fore = p.top if p.long_sleeves else p.skin
    limb(draw, elbow, hand, limb_w * 0.95, limb_w * 0.8, shade(fore, shade_f))
    limb(draw, sh, elbow, limb_w * 1.1, limb_w, shade(p.top, shade_f))
    r = limb_w * 0.55
    draw.ellipse([hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r], fill=shade(p.skin, shade_f))


def _lower_body(draw: ImageDraw.ImageDraw, p: Identity, f: _Figure) -> None:
    """A side view's backpack and far limbs, then legs and skirt or waistband."""
    cx, u, facing, sw, hw, y_sh, y_waist, y_knee = (
        f.cx, f.u, f.facing, f.sw, f.hw, f.y_sh, f.y_waist, f.y_knee
    )  # fmt: skip
    stride, swing, side = f.stride, f.swing, f.side
    # Backpack seen from the side sits behind the body: drawn first.
    if p.backpack is not None and side:
        bx = cx - facing * (sw + 0.055 * u)
        draw.rounded_rectangle(
            [min(bx, cx), y_sh + 0.02 * u, max(bx, cx), y_sh + 0.27 * u],
            radius=0.02 * u,
            fill=shade(p.backpack, 0.9),
        )

    if side:
        _leg(draw, p, f, cx, cx - facing * stride, _DARK)
        _arm(draw, p, f, cx, cx - facing * swing * 2 - facing * 0.02 * u, _DARK)
        _leg(draw, p, f, cx, cx + facing * stride, 1.0)
    else:
        _leg(draw, p, f, cx - hw * 0.5, cx - hw * 0.55 - stride, 1.0)
        _leg(draw, p, f, cx + hw * 0.5, cx + hw * 0.55 + stride, 1.0)
        if p.bottom_kind == "skirt":
            poly(
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
            poly(
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
        poly(
            draw,
            [
                (cx - hw, y_waist - 0.01 * u),
                (cx + hw, y_waist - 0.01 * u),
                (cx + hw * 1.7, y_knee),
                (cx - hw * 1.7, y_knee),
            ],
            p.bottom,
        )


def _torso(canvas: Image.Image, draw: ImageDraw.ImageDraw, p: Identity, f: _Figure) -> None:
    """Torso (with pattern) and shoulders, then what shows on the chest or the back."""
    cx, u, sw, hw, y_sh, y_waist, view = f.cx, f.u, f.sw, f.hw, f.y_sh, f.y_waist, f.view
    torso = [
        (cx - sw, y_sh),
        (cx + sw, y_sh),
        (cx + hw, y_waist + 0.01 * u),
        (cx - hw, y_waist + 0.01 * u),
    ]
    patterned_torso(canvas, torso, p, u)
    r = sw * 0.3
    for x in (cx - sw + r * 0.7, cx + sw - r * 0.7):  # round shoulders
        draw.ellipse([x - r, y_sh - r * 0.25, x + r, y_sh + r * 1.2], fill=p.top)
    if view == "front":
        if p.jacket_inner is not None:
            poly(
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
                    fill=shade(p.backpack, 0.8),
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
            fill=shade(p.backpack, 0.7),
            width=max(1, int(0.01 * u)),
        )


def _arms_and_handbag(draw: ImageDraw.ImageDraw, p: Identity, f: _Figure) -> None:
    """Arms over the torso (the near arm only in a side view), and a handbag at the hip."""
    cx, u, facing, sw, swing, limb_w = f.cx, f.u, f.facing, f.sw, f.swing, f.limb
    side, view, y_sh, y_waist = f.side, f.view, f.y_sh, f.y_waist
    if side:
        _arm(draw, p, f, cx + facing * sw * 0.2, cx + facing * (swing * 2 + 0.02 * u), 1.0)
    else:
        _arm(draw, p, f, cx - sw + limb_w * 0.4, cx - sw - limb_w * 0.3 - abs(swing) * 0.3, 1.0)
        _arm(draw, p, f, cx + sw - limb_w * 0.4, cx + sw + limb_w * 0.3 + abs(swing) * 0.3, 1.0)

    # Handbag: hangs at the hip on its side (mirrored when seen from the back).
    if p.handbag is not None:
        hs = p.handbag_side * (-1 if view == "back" else 1)
        hx = cx + hs * (sw + limb_w * 0.9) if not side else cx + facing * 0.01 * u
        draw.line(
            [(cx + hs * sw * 0.6, y_sh), (hx, y_waist - 0.02 * u)],
            fill=shade(p.handbag, 0.6),
            width=max(1, int(0.012 * u)),
        )
        bw, bh = 0.06 * u, 0.075 * u
        draw.rectangle(
            [hx - bw / 2, y_waist - 0.03 * u, hx + bw / 2, y_waist - 0.03 * u + bh], fill=p.handbag
        )


def _head(draw: ImageDraw.ImageDraw, p: Identity, f: _Figure) -> None:
    """Neck, head, and hair or hat, as each view shows them."""
    cx, top, u, facing, side, view = f.cx, f.top, f.u, f.facing, f.side, f.view
    head_h, head_w, y_sh = f.head_h, f.head_w, f.y_sh
    nx = cx + (facing * 0.01 * u if side else 0.0)
    draw.rectangle(
        [nx - head_w * 0.22, top + head_h * 0.8, nx + head_w * 0.22, y_sh + 0.01 * u],
        fill=shade(p.skin, 0.9),
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
            fill=shade(p.hat, 0.8),
        )
