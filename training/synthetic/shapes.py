"""Drawing primitives for people: polygons, tapered limbs and patterned cloth."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .identity import Identity
from .palette import RGB

__all__ = ["lerp", "limb", "patterned_torso", "poly"]


def poly(draw: ImageDraw.ImageDraw, points, colour: RGB) -> None:
    draw.polygon([(float(x), float(y)) for x, y in points], fill=colour)


def limb(draw: ImageDraw.ImageDraw, a, b, w_a: float, w_b: float, colour: RGB) -> None:
    """A tapered quadrilateral from point a (width w_a) to point b (width w_b)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy) or 1.0
    px, py = -dy / n / 2, dx / n / 2
    poly(
        draw,
        [
            (a[0] + px * w_a, a[1] + py * w_a),
            (b[0] + px * w_b, b[1] + py * w_b),
            (b[0] - px * w_b, b[1] - py * w_b),
            (a[0] - px * w_a, a[1] - py * w_a),
        ],
        colour,
    )


def lerp(a, b, t: float):
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def patterned_torso(canvas: Image.Image, points, p: Identity, u: float) -> None:
    """The torso polygon filled with the identity's top colour and pattern (through a mask)."""
    if p.top_pattern in ("plain", "logo"):
        poly(ImageDraw.Draw(canvas), points, p.top)
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
