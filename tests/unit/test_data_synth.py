"""The synthetic generator writes COCO that pycocotools reads, deterministically by seed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from compress.data.synth import (SHAPE_COLOURS, write_synthetic, write_synthetic_splits)
from compress.core.errors import DataError

# Independent references: the COCO person keypoints, skeleton and flip order as published in
# person_keypoints_val2017.json and the torchvision detection references.
COCO_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
TASKS = ["detection", "segmentation", "keypoints"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {task: write_synthetic(root / task, task, 24, seed=5, image_size=96) for task in TASKS}


def _load(path: Path) -> COCO:
    return COCO(str(path))


@pytest.mark.parametrize("task", TASKS)
def test_pycocotools_loads_and_masks_match_boxes(synth: dict[str, Path], task: str) -> None:
    coco = _load(synth[task])
    assert len(coco.imgs) == 24
    assert len(coco.anns) >= 24
    root = synth[task].parent.parent
    for image_id, info in coco.imgs.items():
        with Image.open(root / "train" / info["file_name"]) as image:
            assert image.size == (info["width"], info["height"]) == (96, 96)
        assert 1 <= len(coco.imgToAnns[image_id]) <= (2 if task == "keypoints" else 3)
    for ann in coco.anns.values():
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert ann["area"] == int(mask.sum()) == int(mask_utils.area(coco.annToRLE(ann)))
        assert ann["iscrowd"] == 0
        assert max(w, h) >= 0.1 * 96  # big objects, learnable at small sizes


def test_keypoint_figures_follow_coco(synth: dict[str, Path]) -> None:
    coco = _load(synth["keypoints"])
    (category,) = coco.loadCats(coco.getCatIds())
    assert (category["id"], category["name"]) == (1, "person")
    assert category["keypoints"] == COCO_NAMES
    assert category["skeleton"] == COCO_SKELETON
    for ann in coco.anns.values():
        points = np.array(ann["keypoints"], dtype=float).reshape(-1, 3)
        assert points.shape == (17, 3)
        assert set(points[:, 2]) <= {1.0, 2.0}
        assert ann["num_keypoints"] == int((points[:, 2] > 0).sum())
        x, y, w, h = ann["bbox"]
        assert np.all((points[:, 0] >= x) & (points[:, 0] <= x + w))
        assert np.all((points[:, 1] >= y) & (points[:, 1] <= y + h))
        # Front-facing: the person's left shoulder and hip are on the image's right.
        for left, right in (("left_shoulder", "right_shoulder"), ("left_hip", "right_hip")):
            assert points[COCO_NAMES.index(left), 0] > points[COCO_NAMES.index(right), 0]


def test_left_and_right_limbs_have_different_colours(synth: dict[str, Path]) -> None:
    coco = _load(synth["keypoints"])
    root = synth["keypoints"].parent.parent
    checked = 0
    for ann in coco.anns.values():
        image = np.asarray(Image.open(root / "train" / coco.imgs[ann["image_id"]]["file_name"]))
        points = np.array(ann["keypoints"]).reshape(-1, 3)
        for side, (index, channel_order) in {"left": (7, (0, 1, 2)), "right": (8, (2, 1, 0))}.items():
            x, y, v = points[index]
            if v != 2:
                continue
            r_or_b, g, b_or_r = (int(image[int(y), int(x), c]) for c in channel_order)
            assert r_or_b > 180 and b_or_r < 90, (side, image[int(y), int(x)])  # orange vs cyan
            checked += 1
    assert checked >= 20


def test_shape_colours_identify_categories(synth: dict[str, Path]) -> None:
    coco = _load(synth["segmentation"])
    root = synth["segmentation"].parent.parent
    for ann in coco.anns.values():
        image = np.asarray(Image.open(root / "train" / coco.imgs[ann["image_id"]]["file_name"]))
        mean = image[coco.annToMask(ann).astype(bool)].mean(axis=0)
        assert np.abs(mean - np.array(SHAPE_COLOURS[ann["category_id"]])).max() <= 21


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_is_byte_identical(tmp_path: Path, task: str) -> None:
    first = write_synthetic(tmp_path / "a", task, 6, seed=11, image_size=64)
    second = write_synthetic(tmp_path / "b", task, 6, seed=11, image_size=64)
    other = write_synthetic(tmp_path / "c", task, 6, seed=12, image_size=64)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    for name in sorted(p.name for p in (tmp_path / "a" / "train").iterdir()):
        assert (tmp_path / "a/train" / name).read_bytes() == (tmp_path / "b/train" / name).read_bytes()


def test_splits_use_different_seeds(tmp_path: Path) -> None:
    paths = write_synthetic_splits(tmp_path, "detection", 5, 3, seed=0, image_size=64)
    assert set(paths) == {"train", "val"}
    train, val = (json.loads(paths[s].read_text()) for s in ("train", "val"))
    assert (len(train["images"]), len(val["images"])) == (5, 3)
    assert train["annotations"][0]["segmentation"] != val["annotations"][0]["segmentation"]
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == [
        f"{i:06d}.png" for i in (1, 2, 3)]


@pytest.mark.parametrize("kwargs", [
    {"task": "pose", "images": 2, "image_size": 64},
    {"task": "detection", "images": -1, "image_size": 64},
    {"task": "detection", "images": 2, "image_size": 16},
])
def test_bad_arguments_raise_data_error(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(DataError):
        write_synthetic(tmp_path, **kwargs)
