"""Cameras: a scene behind the people, illumination, colour cast, viewpoints, blur, occlusion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .palette import RGB, clothing_colour, muted

__all__ = ["Camera", "make_camera"]

_SCENE_WIDTHS, _SCENE_TALL = 8, 1.35  # a camera's scene, in crop widths and heights
_HAZE = 0.5  # how far background clutter is pulled toward the scene's base colour


@dataclass
class Camera:
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


def make_camera(rng: np.random.Generator, height: int, width: int) -> Camera:
    # The scene is wider and taller than a crop: people cross the whole view, so what is behind
    # them changes from image to image even within one camera.
    scene_w, scene_h = width * _SCENE_WIDTHS, int(height * _SCENE_TALL)
    horizon = int(scene_h * rng.uniform(0.35, 0.6))
    top, mid = muted(rng, 90, 220, 20), muted(rng, 60, 190, 20)
    ground_a, ground_b = muted(rng, 70, 170, 18), muted(rng, 50, 150, 18)
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
        colour = muted(rng, 30, 230, 45) if rng.random() < 0.8 else clothing_colour(rng)
        w, h = rng.uniform(0.08, 0.6) * width, rng.uniform(0.04, 0.35) * height
        x, y = rng.uniform(-0.1, 1.0) * scene_w, rng.uniform(-0.05, 1.0) * horizon
        # Distance and haze wash the background out toward the sky/wall colour.
        behind = column[int(np.clip(y + h / 2, 0, scene_h - 1))]
        colour = tuple(int(c + (b - c) * _HAZE) for c, b in zip(colour, behind, strict=True))
        clutter.append(colour)
        draw.rectangle([x, y, x + w, y + h], fill=colour)
    for _ in range(int(rng.integers(1, 3) * _SCENE_WIDTHS)):  # poles and kerbs
        colour = muted(rng, 20, 200, 20)
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
        colour = muted(rng, 40, 180, 25)
        clutter.append(colour)
        x, y = rng.uniform(0, scene_w), rng.uniform(horizon, scene_h)
        r = rng.uniform(0.05, 0.25) * width
        draw.ellipse([x - 2 * r, y - r / 2, x + 2 * r, y + r / 2], fill=colour)
    scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    low = rng.uniform(0.72, 0.88)
    cast = rng.normal(0.0, 0.11, size=3)
    return Camera(
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
