"""One crop: a person drawn into a window of the camera's scene, then the camera's optics."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .camera import Camera
from .identity import Identity
from .person import draw_person

__all__ = ["SUPERSAMPLE", "render"]

SUPERSAMPLE = 2  # draw at twice the size, then reduce: anti-aliased edges for little cost
VIEWS = ("front", "back", "side")


def render(
    p: Identity,
    cam: Camera,
    size: tuple[int, int],
    rng: np.random.Generator,
    bad_detection: bool = False,
) -> Image.Image:
    """One crop of identity p seen by camera cam, at size (height, width)."""
    height, width = size
    big_h, big_w = height * SUPERSAMPLE, width * SUPERSAMPLE
    ox = int(rng.integers(0, cam.scene.width - big_w + 1))
    oy = int(rng.integers(0, cam.scene.height - big_h + 1))
    canvas = cam.scene.crop((ox, oy, ox + big_w, oy + big_h))
    view = VIEWS[int(rng.choice(3, p=cam.views))]
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
    draw_person(canvas, p, view, facing, cx, top, u, rng)

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

    small = canvas.reduce(SUPERSAMPLE)
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
