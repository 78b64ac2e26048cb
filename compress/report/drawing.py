"""Draw a detector's outputs (boxes, labels + scores, masks, keypoints) onto an image with PIL.

Outputs are torchvision-style: boxes N x 4 (x1, y1, x2, y2, pixels), labels N, scores N, masks
N x 1 x H x W probabilities (thresholded at 0.5), keypoints N x K x 3 (x, y, visibility) with an
optional keypoints_scores N x K. Small images are enlarged (nearest neighbour) before drawing so
that text and lines stay legible; coordinates are scaled with them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from compress.core.coco_person import COCO_SKELETON

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))
MASK_THRESHOLD = 0.5
MASK_ALPHA = 0.45
SKELETON = tuple((a - 1, b - 1) for a, b in COCO_SKELETON)  # 0-based


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def image_to_pil(image: Any) -> Image.Image:
    """A PIL RGB image from a PIL image, a CxHxW float tensor/array in [0, 1] or an HxWx3 uint8 array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = to_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def _color(label: int) -> tuple[int, int, int]:
    return PALETTE[int(label) % len(PALETTE)]


def _keep(outputs: Mapping[str, Any], score_threshold: float, max_shown: int | None) -> np.ndarray:
    scores = to_numpy(outputs.get("scores", np.zeros(0))).reshape(-1)
    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return keep if max_shown is None else keep[:max_shown]


def _paint_masks(canvas: Image.Image, masks: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> Image.Image:
    """Each kept mask (thresholded at MASK_THRESHOLD) tinted onto `canvas` in place."""
    if masks.ndim == 4:
        masks = masks[:, 0]
    for i in keep:
        paint_mask(canvas, masks[i] > MASK_THRESHOLD, int(labels[i]))
    return canvas


def paint_mask(canvas: Image.Image, binary: np.ndarray, label: int) -> None:
    """Tint the pixels of `binary` (a bool mask, scaled to the canvas if its size differs) in the
    label's colour, in place, touching only the mask's bounding rectangle (a 13000 px image is
    4 GB as one float64 copy)."""
    rows, cols = np.flatnonzero(binary.any(1)), np.flatnonzero(binary.any(0))
    if not len(rows):
        return
    sx, sy = canvas.width / binary.shape[-1], canvas.height / binary.shape[-2]
    box = (int(cols[0] * sx), int(rows[0] * sy), int(np.ceil((cols[-1] + 1) * sx)),
           int(np.ceil((rows[-1] + 1) * sy)))
    crop = binary[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    stencil = Image.fromarray(crop.astype(np.uint8) * 255).resize(
        (box[2] - box[0], box[3] - box[1]), Image.NEAREST)
    region = canvas.crop(box)
    tint = Image.blend(region, Image.new("RGB", region.size, _color(label)), MASK_ALPHA)
    region.paste(tint, mask=stencil)
    canvas.paste(region, box[:2])


def _draw_keypoints(draw: ImageDraw.ImageDraw, points: np.ndarray, scale: float, color: tuple,
                    radius: int) -> None:
    xy = points[:, :2] * scale
    visible = points[:, 2] > 0 if points.shape[1] > 2 else np.ones(len(points), bool)
    if len(points) == 17:
        for a, b in SKELETON:
            if visible[a] and visible[b]:
                draw.line([tuple(xy[a]), tuple(xy[b])], fill=color, width=max(1, radius // 2))
    for (x, y), shown in zip(xy, visible):
        if shown:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color,
                         outline=(255, 255, 255))


def draw_detections(image: Any, outputs: Mapping[str, Any], *,
                    class_names: Mapping[int, str] | Sequence[str] | None = None,
                    score_threshold: float = 0.5, min_side_px: int = 256,
                    max_shown: int | None = None, in_place: bool = False) -> Image.Image:
    """The image with every detection scoring >= `score_threshold` drawn on it.

    `class_names` maps a label to its name (a mapping, or a list indexed by label); labels without
    a name are shown as numbers; `max_shown` keeps only the best-scoring ones. Returns a new RGB image at least `min_side_px` on its short side;
    with `in_place`, an RGB PIL image large enough is drawn on and returned itself (no copy).
    """
    own = in_place and isinstance(image, Image.Image) and image.mode == "RGB"
    canvas = image if own else image_to_pil(image)
    scale = max(1.0, min_side_px / max(1, min(canvas.size)))
    if scale > 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.NEAREST)
    keep = _keep(outputs, score_threshold, max_shown)
    labels = to_numpy(outputs.get("labels", np.zeros(0, np.int64))).reshape(-1).astype(int)
    if "masks" in outputs and len(keep):
        canvas = _paint_masks(canvas, to_numpy(outputs["masks"]), labels, keep)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    boxes = to_numpy(outputs.get("boxes", np.zeros((0, 4)))).reshape(-1, 4) * scale
    scores = to_numpy(outputs["scores"]).reshape(-1) if "scores" in outputs else np.zeros(0)
    keypoints = to_numpy(outputs["keypoints"]) if "keypoints" in outputs else None
    width = max(1, round(min(canvas.size) / 160))
    for i in keep:
        color = _color(labels[i])
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        text = f"{_name(class_names, labels[i])} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        ty = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 2], fill=color)
        draw.text((x1 + 2, ty), text, fill=(255, 255, 255), font=font)
        if keypoints is not None and i < len(keypoints):
            _draw_keypoints(draw, np.asarray(keypoints[i], dtype=np.float64), scale, color, width + 1)
    return canvas


def _name(class_names: Mapping[int, str] | Sequence[str] | None, label: int) -> str:
    if class_names is None:
        return str(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(int(label), label))
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def side_by_side(images: Sequence[Image.Image], titles: Sequence[str], gap_px: int = 8) -> Image.Image:
    """Images in one row on white, each with its title above it."""
    font = ImageFont.load_default()
    title_h = 16
    height = max(im.height for im in images) + title_h
    width = sum(im.width for im in images) + gap_px * (len(images) - 1)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for im, title in zip(images, titles):
        draw.text((x + 2, 2), title, fill=(0, 0, 0), font=font)
        sheet.paste(im, (x, title_h))
        x += im.width + gap_px
    return sheet
