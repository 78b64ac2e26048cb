"""Keypoint error analysis on constructed cases: each error type counted exactly."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from compress.evaluate.analysis.keypoint_errors import COCO_SIGMAS, analyze_keypoint_errors, flip_index, keypoint_similarity

AREA = 100.0 * 200.0
# a standing person in a 100x200 box: left keypoints at x<50, right at x>50, far apart
BASE = np.array([[50, 20], [45, 15], [55, 15], [40, 18], [60, 18], [30, 50], [70, 50],
                 [20, 80], [80, 80], [10, 110], [90, 110], [35, 120], [65, 120],
                 [32, 160], [68, 160], [30, 195], [70, 195]], dtype=float)
NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
         "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
         "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]


def _person(offset_x: float, ann_id: int) -> dict:
    xy = BASE + [offset_x, 0]
    kps = np.concatenate([xy, np.full((17, 1), 2.0)], axis=1).reshape(-1).tolist()
    return {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": AREA,
            "bbox": [offset_x, 0.0, 100.0, 200.0], "keypoints": kps, "num_keypoints": 17}


def _gt(n_persons: int = 1) -> dict:
    return {"images": [{"id": 1, "width": 600, "height": 220}],
            "annotations": [_person(250.0 * i, i + 1) for i in range(n_persons)],
            "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": []}]}


def _det(xy: np.ndarray, score: float = 0.9) -> dict:
    kps = np.concatenate([xy, np.ones((17, 1))], axis=1).reshape(-1).tolist()
    return {"image_id": 1, "category_id": 1, "keypoints": kps, "score": score}


def _shift_for_ks(ks: float, k: int) -> float:
    """Distance at which keypoint k has similarity ks (inverse of the COCO formula)."""
    return math.sqrt(-math.log(ks) * 2 * AREA * (2 * COCO_SIGMAS[k]) ** 2)


def test_keypoint_similarity_formula():
    d = _shift_for_ks(0.7, 9)
    assert keypoint_similarity(np.array([d, 0.0]), np.zeros(2), AREA, COCO_SIGMAS[9]) == pytest.approx(0.7)


def test_flip_index_from_names():
    flip = flip_index(NAMES, 17)
    assert flip[0] == 0 and flip[1] == 2 and flip[9] == 10 and flip[16] == 15
    assert flip_index(None, 17) == flip


def test_perfect_all_good():
    out = analyze_keypoint_errors(_gt(), [_det(BASE.copy())])
    assert out["counts"] == {"good": 17, "jitter": 0, "inversion": 0, "swap": 0, "miss": 0}
    assert out["false_positives"] == 0 and out["false_negatives"] == 0
    assert out["ap"] == pytest.approx(1.0)


def test_one_jitter():
    xy = BASE.copy()
    xy[9, 0] += _shift_for_ks(0.7, 9)  # left wrist moved to ks ~ 0.7
    out = analyze_keypoint_errors(_gt(), [_det(xy)])
    assert out["counts"] == {"good": 16, "jitter": 1, "inversion": 0, "swap": 0, "miss": 0}


def test_left_right_swapped_is_inversion():
    xy = BASE.copy()
    xy[[9, 10]] = xy[[10, 9]]  # wrists swapped
    out = analyze_keypoint_errors(_gt(), [_det(xy)])
    assert out["counts"] == {"good": 15, "jitter": 0, "inversion": 2, "swap": 0, "miss": 0}
    assert out["ap_gain"]["inversion"] > 0 and out["ap_gain"]["miss"] == 0.0


def test_keypoint_from_other_person_is_swap():
    gt = _gt(2)
    xy = BASE.copy()
    xy[13] = BASE[13] + [250.0, 0]  # left knee taken from person 2
    other = _det(BASE + [250.0, 0], score=0.8)
    out = analyze_keypoint_errors(gt, [_det(xy), other])
    assert out["counts"] == {"good": 33, "jitter": 0, "inversion": 0, "swap": 1, "miss": 0}


def test_far_away_is_miss_and_fix_gains_exact_ap():
    xy = BASE.copy()
    xy[15] = [500.0, 10.0]  # left ankle far away from everything
    out = analyze_keypoint_errors(_gt(), [_det(xy)])
    assert out["counts"] == {"good": 16, "jitter": 0, "inversion": 0, "swap": 0, "miss": 1}
    # OKS = 16/17 = 0.941: matched at IoU thresholds .50..0.90 (9 of 10) -> AP 0.9; fixed -> 1.0
    assert out["ap"] == pytest.approx(0.9, abs=1e-9)
    assert out["ap_gain"]["miss"] == pytest.approx(0.1, abs=1e-9)


def test_background_fp_and_false_negative(tmp_path):
    gt = _gt(2)
    stray = _det(BASE + [500.0, 0.0], score=0.95)  # nowhere near any person (OKS < 0.1)
    out = analyze_keypoint_errors(gt, [stray, _det(BASE.copy(), 0.5)], out_dir=tmp_path)
    assert out["false_positives"] == 1 and out["false_negatives"] == 1
    assert out["counts"]["good"] == 17
    assert out["ap_gain"]["false_positives"] > 0
    saved = json.loads((tmp_path / "keypoint_errors.json").read_text())
    assert saved["counts"] == out["counts"]
    assert (tmp_path / "keypoint_error_counts.png").stat().st_size > 1000
    assert (tmp_path / "keypoint_ap_gain.png").stat().st_size > 1000


def test_invisible_gt_keypoints_not_counted():
    gt = _gt()
    kps = gt["annotations"][0]["keypoints"]
    for k in (3, 4):
        kps[3 * k + 2] = 0
    gt["annotations"][0]["num_keypoints"] = 15
    out = analyze_keypoint_errors(gt, [_det(BASE.copy())])
    assert sum(out["counts"].values()) == 15


def test_empty_results_all_false_negatives():
    out = analyze_keypoint_errors(_gt(2), [])
    assert out["false_negatives"] == 2 and out["false_positives"] == 0
    assert set(out["ap_gain"]) == {"jitter", "inversion", "swap", "miss", "false_positives"}
    assert sum(out["counts"].values()) == 0
