"""The `medium` and `hard` synthetic scenes: data on which a detector has to learn shape, not
colour, and on which pruning can hurt (so a ticket and its controls separate).

Medium shapes: 5 categories (the first five of `HARD_SHAPES`) told apart by outline only (random
palette colours; 80% of objects take their category's own colour, a cue the model may learn),
2-5 objects an image, 15% of them small, at most 30% of an object hidden, on a
faint texture with 0-3 clutter marks: a small detector learns it in a few hundred iterations.

Shapes (detection / segmentation): 8 categories told apart only by outline (every object takes a
random colour from one palette shared by all categories), 3-8 objects an image, a third of them
small, overlapping with up to 60% of an object hidden by later ones, on a textured background
(stripes, checks or smooth blobs) with unannotated clutter (lines, dots, rings) in the same
palette. Keypoints: 2-4 stick figures anywhere (crowded, overlapping, partly out of the frame)
and 0-2 opaque occluders; a joint under another figure or an occluder is labelled invisible
(v=1), one outside the image unlabelled (v=0, at 0,0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from compress.data.synth_figures import SceneObject, draw_figure, figure_points, jitter

HARD_SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "cross", "ring", "pentagon", "star")
HARD_SHAPE_CATEGORIES = [{"id": i + 1, "name": name, "supercategory": "shape"}
                         for i, name in enumerate(HARD_SHAPES)]
PALETTE = ((220, 40, 40), (40, 200, 40), (40, 70, 230), (230, 200, 40), (200, 60, 200),
           (40, 200, 210), (240, 140, 40), (250, 250, 250), (30, 30, 30), (140, 90, 50))
MAX_HIDDEN = 0.6  # an object may lose at most this fraction of its pixels to later objects
MIN_VISIBLE_PX = 6


@dataclass(frozen=True)
class ShapeLevel:
    """How hard a shapes scene is (see the module docstring)."""

    categories: int  # the first `categories` of HARD_SHAPES
    objects: tuple[int, int]  # [low, high) objects an image
    small_fraction: float  # share of objects drawn small (7-15% of the side)
    max_hidden: float  # an object may lose at most this fraction of its pixels to later objects
    texture: tuple[float, float]  # background pattern amplitude range
    clutter: tuple[int, int]  # [low, high) unannotated marks
    colour_cue: float = 0.0  # chance an object takes its category's own palette colour


LEVELS = {
    "medium": ShapeLevel(5, (1, 4), 0.0, 0.3, (2.0, 6.0), (0, 3), colour_cue=0.8),
    "hard": ShapeLevel(len(HARD_SHAPES), (3, 9), 0.35, MAX_HIDDEN, (15.0, 40.0), (4, 11)),
}


def shape_categories(difficulty: str) -> list[dict]:
    return HARD_SHAPE_CATEGORIES[: LEVELS[difficulty].categories]


def textured_background(rng: np.random.Generator, size: int,
                        amplitude: tuple[float, float] = (15.0, 40.0)) -> np.ndarray:
    """A tinted grey with stripes, checks or smooth blobs, plus pixel noise."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size
    kind = int(rng.integers(0, 3))
    if kind == 0:
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 10)
        pattern = np.sin(2 * np.pi * freq * (xs * np.cos(angle) + ys * np.sin(angle)))
    elif kind == 1:
        cells = int(rng.integers(3, 9))
        pattern = ((np.floor(xs * cells) + np.floor(ys * cells)) % 2) * 2 - 1.0
    else:
        coarse = rng.normal(0, 1, size=(5, 5))
        pattern = np.asarray(Image.fromarray(coarse.astype(np.float32)).resize(
            (size, size), Image.BILINEAR), dtype=np.float64)
        pattern /= max(1e-6, float(np.abs(pattern).max()))
    base = rng.integers(70, 170, size=3).astype(np.float64)
    image = base[None, None, :] + rng.uniform(*amplitude) * pattern[:, :, None]
    image += rng.normal(0.0, 10.0, size=(size, size, 1))
    return np.clip(image, 0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, image: np.ndarray, count: tuple[int, int] = (4, 11)) -> None:
    """Unannotated distractors in the objects' palette: thin lines, dots and small rings."""
    size = image.shape[0]
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(*count))):
        colour = jitter(rng, PALETTE[int(rng.integers(len(PALETTE)))])
        x, y = rng.uniform(0, size, size=2)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            x2, y2 = rng.uniform(0, size, size=2)
            draw.line([(x, y), (x2, y2)], fill=colour, width=1)
        else:
            r = rng.uniform(0.01, 0.03) * size
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour if kind == 1 else None,
                         outline=colour)
    image[...] = np.asarray(canvas)


def _outline(name: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if name == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if name == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    count, inner = (5, 1.0) if name == "pentagon" else (10, 0.45)
    angles = -np.pi / 2 + np.arange(count) * 2 * np.pi / count
    radius = np.where(np.arange(count) % 2 == 1, inner, 1.0)
    return [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radius)]


def _hard_shape_mask(name: str, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if name == "rectangle":
        draw.rectangle(box, fill=1)
    elif name == "ellipse":
        draw.ellipse(box, fill=1)
    elif name == "ring":
        draw.ellipse(box, fill=1)
        draw.ellipse([x0 + 0.3 * w, y0 + 0.3 * h, x1 - 0.3 * w, y1 - 0.3 * h], fill=0)
    elif name == "cross":
        draw.rectangle([x0 + w / 3, y0, x1 - w / 3, y1], fill=1)
        draw.rectangle([x0, y0 + h / 3, x1, y1 - h / 3], fill=1)
    else:
        draw.polygon(_outline(name, box), fill=1)
    return np.asarray(canvas, dtype=bool)


def _candidate(rng: np.random.Generator, size: int, level: ShapeLevel) -> tuple[int, np.ndarray]:
    small = rng.random() < level.small_fraction
    low, high = (0.07, 0.15) if small else (0.15, 0.45)
    w, h = rng.uniform(low, high) * size, rng.uniform(low, high) * size
    x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
    cat = int(rng.integers(1, level.categories + 1))
    return cat, _hard_shape_mask(HARD_SHAPES[cat - 1], (x0, y0, x0 + w, y0 + h), size)


def draw_shape_scene(rng: np.random.Generator, size: int,
                     difficulty: str = "hard") -> tuple[np.ndarray, list[SceneObject]]:
    """A textured image with overlapping shapes at `difficulty` (LEVELS); returns (image, objects)."""
    level = LEVELS[difficulty]
    image = textured_background(rng, size, level.texture)
    _clutter(rng, image, level.clutter)
    placed: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(*level.objects))):
        for _attempt in range(10):
            cat, mask = _candidate(rng, size, level)
            if all((m & ~mask).sum() >= (1 - level.max_hidden) * m.sum() for _, m in placed):
                placed.append((cat, mask))
                break
    objects = []
    for index, (cat, mask) in enumerate(placed):
        own = level.colour_cue > 0 and rng.random() < level.colour_cue
        image[mask] = jitter(rng, PALETTE[cat - 1 if own else int(rng.integers(len(PALETTE)))], 15)
        visible = mask.copy()
        for _, later in placed[index + 1:]:
            visible &= ~later
        objects.append(SceneObject(cat, visible))
    return image, [o for o in objects if o.mask.sum() >= MIN_VISIBLE_PX]


def _occluders(rng: np.random.Generator, size: int, canvas: Image.Image) -> np.ndarray:
    """0-2 opaque rectangles drawn over everything; returns their union mask."""
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 3))):
        w, h = rng.uniform(0.12, 0.3, size=2) * size
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=jitter(rng, (110, 110, 110), 60) + (255,))
    return np.asarray(canvas)[:, :, 3] == 255


def draw_crowd(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[SceneObject]]:
    """2-4 overlapping stick figures and occluders on a textured background."""
    background = Image.fromarray(textured_background(rng, size)).convert("RGBA")
    figures: list[tuple[np.ndarray, np.ndarray]] = []
    canvas = background
    for _ in range(int(rng.integers(2, 5))):
        height = rng.uniform(0.35, 0.8) * size
        cx = rng.uniform(0.1 * size, 0.9 * size)
        top = rng.uniform(-0.1 * height, size - 0.85 * height)
        points = np.round(figure_points(rng, height, cx, top))
        layer, mask = draw_figure(size, np.clip(points, 0, size - 1), height, rng)
        canvas = Image.alpha_composite(canvas, layer)
        figures = [(p, m & ~mask) for p, m in figures] + [(points, mask)]
    overlay = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    blocked = _occluders(rng, size, overlay)
    canvas = Image.alpha_composite(canvas, overlay)
    objects = [_person(points, mask & ~blocked, size) for points, mask in figures]
    return np.asarray(canvas.convert("RGB")).copy(), [o for o in objects if o is not None]


def _person(points: np.ndarray, visible: np.ndarray, size: int) -> SceneObject | None:
    """v=2 where the joint's pixel shows its own figure, 1 where covered, 0 outside the image."""
    inside = (points >= 0).all(axis=1) & (points <= size - 1).all(axis=1)
    cols = np.clip(points[:, 0], 0, size - 1).astype(int)
    rows = np.clip(points[:, 1], 0, size - 1).astype(int)
    vis = np.where(inside, np.where(visible[rows, cols], 2.0, 1.0), 0.0)
    xy = np.where(inside[:, None], points + 0.5, 0.0)
    if visible.sum() < MIN_VISIBLE_PX or int((vis > 0).sum()) < 3:
        return None
    keypoints = np.concatenate([xy, vis[:, None]], axis=1)
    return SceneObject(1, visible, [round(float(v), 2) for v in keypoints.reshape(-1)])
