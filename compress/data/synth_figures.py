"""Stick figures for the synthetic keypoint data: the COCO person keypoints and skeleton, a
front-facing template, its drawing, and the object record every synthetic scene returns.

Left limbs are drawn orange, right limbs cyan, torso and head white; figures face the camera, so
a person's left side is on the image's right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from compress.core.coco_person import COCO_SKELETON, KEYPOINT_NAMES

PERSON_CATEGORY = {
    "id": 1, "name": "person", "supercategory": "person",
    "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(pair) for pair in COCO_SKELETON],
}
LEFT_COLOUR = (255, 150, 20)
RIGHT_COLOUR = (20, 220, 230)
CENTRE_COLOUR = (245, 245, 245)

# Front-facing template: (x, y) in units of figure height, x relative to the body centre line.
# The person's left (COCO "left_*") is at +x, i.e. on the image's right.
_TEMPLATE = np.array([
    [0.0, 0.09], [0.03, 0.065], [-0.03, 0.065], [0.065, 0.085], [-0.065, 0.085],
    [0.13, 0.21], [-0.13, 0.21], [0.19, 0.36], [-0.19, 0.36], [0.23, 0.50], [-0.23, 0.50],
    [0.08, 0.55], [-0.08, 0.55], [0.10, 0.76], [-0.10, 0.76], [0.11, 0.96], [-0.11, 0.96],
], dtype=np.float64)
_LIMBS_LEFT = [(5, 7), (7, 9), (11, 13), (13, 15)]
_LIMBS_RIGHT = [(6, 8), (8, 10), (12, 14), (14, 16)]
_TORSO = [(5, 6), (11, 12), (5, 11), (6, 12)]


@dataclass
class SceneObject:
    category_id: int
    mask: np.ndarray  # bool HxW, the object's visible pixels
    keypoints: list[float] | None = None


def jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 20) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def figure_points(rng: np.random.Generator, height: float, cx: float, top: float) -> np.ndarray:
    points = _TEMPLATE.copy()
    points[5:, 0] *= rng.uniform(0.85, 1.25)  # body width
    points[7:11] += rng.uniform(-0.08, 0.08, size=(4, 2))  # arm poses
    points[13:17, 0] += rng.uniform(-0.04, 0.06, size=4) * np.sign(points[13:17, 0])  # stance
    return np.stack([cx + points[:, 0] * height, top + points[:, 1] * height], axis=1)


def draw_figure(size: int, points: np.ndarray, height: float,
                 rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """Render one figure on a transparent RGBA layer; returns (layer, silhouette mask)."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    width = 2 * max(1, int(round(height / 28))) + 1  # odd: centred on the keypoint pixels
    half = width // 2
    centre, left, right = (jitter(rng, c, 10) + (255,) for c in (CENTRE_COLOUR, LEFT_COLOUR,
                                                                   RIGHT_COLOUR))
    for limbs, colour in ((_TORSO, centre), (_LIMBS_LEFT, left), (_LIMBS_RIGHT, right)):
        for a, b in limbs:
            draw.line([tuple(points[a]), tuple(points[b])], fill=colour, width=width)
            for x, y in (points[a], points[b]):  # round joints that cover the keypoint pixel
                draw.ellipse([x - half, y - half, x + half, y + half], fill=colour)
    head_r = 0.085 * height
    nose = points[0]
    draw.ellipse([nose[0] - head_r, nose[1] - head_r, nose[0] + head_r, nose[1] + head_r],
                 fill=centre)
    neck = (points[5] + points[6]) / 2
    draw.line([tuple(nose), tuple(neck)], fill=centre, width=width)
    for index, colour in ((1, left), (2, right), (3, left), (4, right)):  # eyes and ears
        x, y = points[index]
        r = max(1.0, width / 2)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return layer, np.asarray(layer)[:, :, 3] > 0


def hidden_by_others(drawn: list[tuple[np.ndarray, np.ndarray]], own: np.ndarray, rows: np.ndarray,
            cols: np.ndarray) -> np.ndarray:
    """Whether each keypoint pixel is covered by another figure drawn over it (then v=1)."""
    covered = np.zeros(len(rows), dtype=bool)
    for _, other in drawn:
        if other is not own:
            covered |= other[rows, cols]
    return covered
