"""Built-in synthetic dataset: coloured shapes and stick figures written in COCO format.

`write_synthetic` draws small images with big, strongly coloured objects (a small detector learns
them in minutes on a CPU) in the COCO layout `compress.data.loaders` reads for `data.dataset: coco`:
`out_dir/annotations/instances_<split>.json` (`person_keypoints_<split>.json` for keypoints) plus
`out_dir/<split>/<file_name>.png`, and records the split's settings in the marker file
(compress/data/synth_marker.py). The same seed gives byte-identical files (fixed key order, no
timestamps, deterministic PNG encoding).

Tasks (difficulty "easy"; "medium" and "hard" scenes are described in compress/data/synth_scenes.py):
- "detection" / "segmentation": 1-3 shapes (rectangle, ellipse, triangle; one colour per
  category with a small jitter) on a grey noisy background, with bbox, RLE segmentation, area.
- "keypoints": 1-2 front-facing stick figures (category "person", the 17 COCO keypoints in COCO
  order, the COCO skeleton). Left limbs are drawn orange, right limbs cyan, torso and head white;
  figures always face the camera, so a person's left side is on the image's right. Under a
  horizontal flip with the left/right permutation the geometry stays consistent, the limb
  colours do not (the colour cue then says the opposite side).
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from compress.core.atomic import write_text
from compress.core.errors import DataError
from compress.data.loaders import annotation_file
from compress.data.synth_marker import MARKER, folder_state, record_split, start_split
from compress.data.synth_scenes import draw_crowd, draw_shape_scene, shape_categories
from compress.data.synth_figures import (PERSON_CATEGORY, SceneObject, draw_figure, figure_points,
                                         hidden_by_others, jitter)

log = logging.getLogger(__name__)

TASKS = ("detection", "segmentation", "keypoints")
DIFFICULTIES = ("easy", "medium", "hard")  # medium, hard: compress/data/synth_scenes.py

SHAPE_CATEGORIES = [
    {"id": 1, "name": "rectangle", "supercategory": "shape"},
    {"id": 2, "name": "ellipse", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
SHAPE_COLOURS = {1: (220, 40, 40), 2: (40, 200, 40), 3: (40, 70, 230)}

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    grey = rng.integers(100, 156)
    noise = rng.normal(0.0, 12.0, size=(size, size, 1))
    image = np.clip(grey + noise, 0, 255).astype(np.uint8)
    return np.repeat(image, 3, axis=2)


def _shape_mask(rng: np.random.Generator, category_id: int, size: int) -> np.ndarray:
    side_w = rng.uniform(0.2, 0.6) * size
    side_h = rng.uniform(0.2, 0.6) * size
    x0 = rng.uniform(0, size - side_w)
    y0 = rng.uniform(0, size - side_h)
    box = [x0, y0, x0 + side_w, y0 + side_h]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if category_id == 1:
        draw.rectangle(box, fill=1)
    elif category_id == 2:
        draw.ellipse(box, fill=1)
    else:
        apex = x0 + rng.uniform(0.0, 1.0) * side_w
        draw.polygon([(apex, y0), (box[2], box[3]), (x0, box[3])], fill=1)
    return np.asarray(canvas, dtype=bool)


def _place_shapes(rng: np.random.Generator, size: int) -> list[tuple[int, np.ndarray]]:
    """1-3 shape masks; a candidate that hides over 30% of an earlier one (or itself) is redrawn."""
    placed: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            cat = int(rng.integers(1, 4))
            mask = _shape_mask(rng, cat, size)
            if all((mask & m).sum() <= 0.3 * min(m.sum(), mask.sum()) for _, m in placed):
                placed.append((cat, mask))
                break
    return placed


def _draw_shapes(rng: np.random.Generator, image: np.ndarray) -> list[SceneObject]:
    placed = _place_shapes(rng, image.shape[0])
    objects: list[SceneObject] = []
    for index, (cat, mask) in enumerate(placed):
        image[mask] = jitter(rng, SHAPE_COLOURS[cat])
        visible = mask.copy()
        for _, later in placed[index + 1:]:
            visible &= ~later
        objects.append(SceneObject(cat, visible))
    return [o for o in objects if o.mask.sum() >= 4]


def _place_figures(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, float]]:
    """Pick 1-2 figure layouts (keypoint points, height); two figures get separate halves."""
    count = int(rng.integers(1, 3))
    layouts = []
    for slot in range(count):
        height = rng.uniform(0.55, 0.9) * size if count == 1 else rng.uniform(0.45, 0.65) * size
        half_w = 0.32 * height
        low, high = half_w, size - half_w
        if count == 2:
            low, high = (low, size / 2 - half_w) if slot == 0 else (size / 2 + half_w, high)
        cx = rng.uniform(low, max(low, high))
        top = rng.uniform(0.02 * size, max(0.02 * size, size - 0.98 * height))
        points = np.clip(np.round(figure_points(rng, height, cx, top)), 0, size - 1)
        layouts.append((points, height))
    return layouts


def _draw_figures(rng: np.random.Generator, image: np.ndarray) -> list[SceneObject]:
    size = image.shape[0]
    canvas = Image.fromarray(image).convert("RGBA")
    drawn: list[tuple[np.ndarray, np.ndarray]] = []
    for points, height in _place_figures(rng, size):
        layer, mask = draw_figure(size, points, height, rng)
        canvas = Image.alpha_composite(canvas, layer)
        drawn = [(p, m & ~mask) for p, m in drawn] + [(points, mask)]
    image[...] = np.asarray(canvas.convert("RGB"))
    objects = []
    for points, mask in drawn:
        cols, rows = points[:, 0].astype(int), points[:, 1].astype(int)
        visibility = np.where(mask[rows, cols] | ~hidden_by_others(drawn, mask, rows, cols), 2.0, 1.0)
        keypoints = np.concatenate([points + 0.5, visibility[:, None]], axis=1)
        objects.append(SceneObject(1, mask, [round(float(v), 2) for v in keypoints.reshape(-1)]))
    return [o for o in objects if o.mask.sum() >= 4]


def _annotation(obj: SceneObject, ann_id: int, image_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
    bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
    ann = {
        "id": ann_id, "image_id": image_id, "category_id": obj.category_id,
        "bbox": bbox, "area": int(mask_utils.area(rle)), "iscrowd": 0,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
    }
    if obj.keypoints is not None:
        ann["keypoints"] = obj.keypoints
        ann["num_keypoints"] = sum(1 for v in obj.keypoints[2::3] if v > 0)
    return ann


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_args(task: str, images: int, image_size: int, difficulty: str) -> None:
    if task not in TASKS:
        raise DataError(f"synthetic task '{task}' is unknown; expected one of {', '.join(TASKS)}")
    if difficulty not in DIFFICULTIES:
        raise DataError(f"synthetic difficulty '{difficulty}' is unknown; expected one of "
                        f"{', '.join(DIFFICULTIES)}")
    if task == "keypoints" and difficulty == "medium":
        raise DataError("synthetic difficulty 'medium' draws shapes; keypoints take 'easy' or 'hard'")
    if images < 0:
        raise DataError(f"synthetic images {images} is negative; expected a count >= 0")
    if image_size < 32:
        raise DataError(f"synthetic image_size {image_size} is too small; expected >= 32 pixels")


def write_synthetic(out_dir: str | Path, task: str, images: int, seed: int = 0,
                    image_size: int = 128, split: str = "train", difficulty: str = "easy",
                    key: str = "--out", own_folder: bool = False) -> Path:
    """Write `images` generated images and their COCO JSON; returns the annotation file path.

    The marker says the split is in progress before the first image; images go to
    `out_dir/<split>/<id:06d>.png`, annotations to `loaders.annotation_file(...)` (written after
    the images, atomically), then the marker records the split as complete. A folder holding
    files we did not generate is refused (DataError keyed `key`, the option or recipe key the user
    named it with) unless `own_folder` (a run folder's own `data/`, which only the run writes).
    `difficulty` "hard" draws compress.data.synth_scenes' crowded, cluttered scenes.
    """
    _check_args(task, images, image_size, difficulty)
    out_dir = Path(out_dir)
    if not own_folder and folder_state(out_dir, {}) == "foreign":
        raise DataError(f"'{out_dir}' holds files lth-compress did not generate (no {MARKER}); "
                        "synthetic data is written only into a new or empty folder, or one it "
                        "generated before", key=key)
    settings = split_settings(task, images, seed, image_size, difficulty)
    out_dir.mkdir(parents=True, exist_ok=True)
    start_split(out_dir, split, settings)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image_entries, annotations = [], []
    for image_id in range(1, images + 1):
        image, objects = _scene(rng, task, image_size, difficulty)
        file_name = f"{image_id:06d}.png"
        (image_dir / file_name).write_bytes(_png_bytes(image))
        image_entries.append({"id": image_id, "file_name": file_name,
                              "width": image_size, "height": image_size})
        for obj in objects:
            annotations.append(_annotation(obj, len(annotations) + 1, image_id))
    categories = [PERSON_CATEGORY] if task == "keypoints" else \
        SHAPE_CATEGORIES if difficulty == "easy" else shape_categories(difficulty)
    hard = "" if difficulty == "easy" else f" {difficulty}"
    dataset = {
        "info": {"description": f"lth-compress synthetic{hard} {task} {split} (seed {seed})",
                 "version": "1"},
        "licenses": [], "images": image_entries, "annotations": annotations,
        "categories": categories,
    }
    ann_file = annotation_file("synthetic", out_dir, split, task)
    write_text(ann_file, json.dumps(dataset, sort_keys=True, separators=(",", ":")) + "\n")
    record_split(out_dir, split, settings)
    log.info("wrote %d synthetic %s images (%d objects) to %s", images, task,
             len(annotations), out_dir)
    return ann_file


def split_settings(task: str, images: int, seed: int, image_size: int, difficulty: str) -> dict:
    """What the marker records of a split: everything that decides its content."""
    return {"task": task, "images": images, "seed": seed, "image_size": image_size,
            "difficulty": difficulty}


def _scene(rng: np.random.Generator, task: str, size: int,
           difficulty: str) -> tuple[np.ndarray, list[SceneObject]]:
    if difficulty != "easy":
        return draw_crowd(rng, size) if task == "keypoints" else draw_shape_scene(rng, size, difficulty)
    image = _background(rng, size)
    objects = _draw_figures(rng, image) if task == "keypoints" else _draw_shapes(rng, image)
    return image, objects


def split_seed(seed: int, split_index: int) -> int:
    """A seed for split `split_index` derived from `seed` (train and val never share one)."""
    return int(np.random.SeedSequence([seed, split_index]).generate_state(1)[0])


def write_synthetic_splits(out_dir: str | Path, task: str, train_images: int, val_images: int,
                           seed: int = 0, image_size: int = 128, difficulty: str = "easy",
                           key: str = "--out", own_folder: bool = False) -> dict[str, Path]:
    """Write the `train` and `val` splits with different derived seeds; returns split -> JSON
    (`key`, `own_folder`: as `write_synthetic`)."""
    return {
        split: write_synthetic(out_dir, task, count, seed=split_seed(seed, index),
                               image_size=image_size, split=split, difficulty=difficulty,
                               key=key, own_folder=own_folder)
        for index, (split, count) in enumerate((("train", train_images), ("val", val_images)))
    }
