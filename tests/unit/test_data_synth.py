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


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task", ["segmentation", "keypoints"])
def test_hard_scenes_byte_deterministic_by_seed(tmp_path: Path, task: str) -> None:
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        write_synthetic_splits(tmp_path / name, task, 6, 3, seed=seed, image_size=64, difficulty="hard")
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")


def test_hard_shapes_crowded_small_outline_only(tmp_path: Path) -> None:
    coco = _load(write_synthetic(tmp_path, "segmentation", 40, seed=2, image_size=96, difficulty="hard"))
    assert len(coco.cats) == 8
    counts = [len(coco.imgToAnns[i]) for i in coco.imgs]
    assert max(counts) >= 6 and min(counts) >= 1 and sum(counts) / len(counts) >= 3.5
    assert {a["category_id"] for a in coco.anns.values()} == set(range(1, 9))
    boxes = [a["bbox"] for a in coco.anns.values()]
    assert sum(max(w, h) < 0.16 * 96 for _, _, w, h in boxes) >= 0.15 * len(boxes)  # small ones
    overlapping = 0
    for image_id in coco.imgs:
        anns = coco.imgToAnns[image_id]
        for i, a in enumerate(anns):
            mask = coco.annToMask(a)
            ys, xs = np.nonzero(mask)
            x, y, w, h = a["bbox"]
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            overlapping += any(_iou(a["bbox"], b["bbox"]) > 0 for b in anns[i + 1:])
    assert overlapping >= 20
    colours: dict[int, set] = {}
    for ann in coco.anns.values():  # one category takes many colours: shape is the only cue
        image = np.asarray(Image.open(tmp_path / "train" / coco.imgs[ann["image_id"]]["file_name"]))
        ys, xs = np.nonzero(coco.annToMask(ann))
        colours.setdefault(ann["category_id"], set()).add(tuple(int(c) // 64 for c in image[ys[0], xs[0]]))
    assert all(len(c) >= 3 for c in colours.values())


def test_medium_shapes_five_outlines_mostly_own_colour(tmp_path: Path) -> None:
    from compress.data.synth_scenes import PALETTE
    coco = _load(write_synthetic(tmp_path, "detection", 60, seed=2, image_size=96, difficulty="medium"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [
        "rectangle", "ellipse", "triangle", "diamond", "cross"]
    counts = [len(coco.imgToAnns[i]) for i in coco.imgs]
    assert 1 <= min(counts) and max(counts) <= 3
    own = total = 0
    for ann in coco.anns.values():
        image = np.asarray(Image.open(tmp_path / "train" / coco.imgs[ann["image_id"]]["file_name"]))
        ys, xs = np.nonzero(coco.annToMask(ann))
        pixel = image[ys[len(ys) // 2], xs[len(xs) // 2]].astype(int)
        own += int(np.abs(pixel - np.array(PALETTE[ann["category_id"] - 1])).max() <= 15)
        total += 1
    assert 0.6 * total <= own <= 0.95 * total  # the 80% colour cue, jitter <= 15


def test_medium_keypoints_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="medium"):
        write_synthetic(tmp_path, "keypoints", 2, difficulty="medium")


def _iou(a: list[float], b: list[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_hard_keypoints_crowds_and_invisible_joints(tmp_path: Path) -> None:
    coco = _load(write_synthetic(tmp_path, "keypoints", 30, seed=3, image_size=96, difficulty="hard"))
    counts = [len(coco.imgToAnns[i]) for i in coco.imgs]
    assert max(counts) >= 3 and sum(counts) / len(counts) >= 2.0
    vis = np.array([v for a in coco.anns.values() for v in a["keypoints"][2::3]])
    assert (vis == 1).mean() > 0.05 and (vis == 0).sum() > 0 and (vis == 2).mean() > 0.5
    for ann in coco.anns.values():
        kp = np.array(ann["keypoints"]).reshape(-1, 3)
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert (kp[kp[:, 2] == 0, :2] == 0).all()
        mask = coco.annToMask(ann)
        for x, y, v in kp[kp[:, 2] == 2]:
            assert mask[int(y), int(x)], "a visible joint lies off its figure's visible pixels"


def test_unknown_difficulty_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="difficulty"):
        write_synthetic(tmp_path, "segmentation", 2, difficulty="extreme")
