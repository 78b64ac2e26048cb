"""Keypoint errors counted as coco-analyze counts them, on hand-built crowded scenes.

Every scene is one where the reference rule (the best of: own keypoint, every other annotation's
same keypoint, all of them left/right-flipped) and a rule that looks at the own keypoint first
disagree. Each expected count is derived in the comments from ks = exp(-d^2 / (8 A sigma^2)),
A = 100 * 200 = 20000 for every person here, so 8 A sigma^2 is 615.04 for a wrist (sigma .062),
1211.04 for a knee (.087), 1267.36 for an ankle (.089) and 1831.68 for a hip (.107).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from compress.evaluate.analysis.keypoint_errors import COCO_SIGMAS, analyze_keypoint_errors

AREA = 100.0 * 200.0
NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
         "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
         "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
NOSE, L_WRIST, R_WRIST, L_HIP, L_ANKLE, R_ANKLE = 0, 9, 10, 11, 15, 16
# A standing person in a 100 x 200 box; left keypoints at x < 50, right ones at x > 50.
BASE = np.array([[50, 20], [45, 15], [55, 15], [40, 18], [60, 18], [30, 50], [70, 50],
                 [20, 80], [80, 80], [10, 110], [90, 110], [35, 120], [65, 120],
                 [32, 160], [68, 160], [30, 195], [70, 195]], dtype=float)


def shift_for(ks: float, k: int) -> float:
    """The distance at which keypoint k has similarity ks for a person of area AREA."""
    return math.sqrt(-math.log(ks) * 8 * AREA * COCO_SIGMAS[k] ** 2)


DX = shift_for(0.7, L_WRIST)  # 14.81 px: a neighbour standing this close is a crowded scene


def person(xy: np.ndarray, ann_id: int, image_id: int = 1, visible=None, **extra) -> dict:
    v = np.full((17, 1), 2.0) if visible is None else np.asarray(visible, float).reshape(17, 1)
    x0 = float(xy[:, 0].min())
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": AREA,
            "bbox": [x0, 0.0, 100.0, 200.0], "num_keypoints": int((v > 0).sum()),
            "keypoints": np.concatenate([xy, v], axis=1).reshape(-1).tolist(), **extra}


def det(xy: np.ndarray, score: float, image_id: int = 1) -> dict:
    kps = np.concatenate([xy, np.ones((17, 1))], axis=1).reshape(-1).tolist()
    return {"image_id": image_id, "category_id": 1, "keypoints": kps, "score": score}


def gt_file(annotations: list[dict], images: int = 1) -> dict:
    return {"images": [{"id": i, "width": 800, "height": 220} for i in range(1, images + 1)],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": []}]}


def counts(good=0, jitter=0, inversion=0, swap=0, miss=0) -> dict:
    return {"good": good, "jitter": jitter, "inversion": inversion, "swap": swap, "miss": miss}


def scene_neighbour_joint(image_id: int = 1, first_id: int = 1):
    """Two overlapping people, P2 = P1 moved DX to the right; both detected.

    The detection of P1 puts its left wrist and left hip exactly on P2's (ks 1.0 there):
    - left wrist: own ks exp(-DX^2/615.04) = 0.700; P2's left wrist 1.0 -> swap (own-first: jitter);
    - left hip: own ks exp(-DX^2/1831.68) = 0.7^(.062^2/.107^2) = 0.887 > 0.85, P2's 1.0 -> swap
      (own-first: good).
    Its 15 other keypoints sit on P1's own (ks 1.0, a tie nobody else reaches) -> good.
    The detection of P2 is exact: 17 good. Matching: OKS(d1, P1) = (15 + .700 + .887) / 17 = .976
    beats OKS(d1, P2) (15 keypoints off by DX), so d1 -> P1, then d2 -> P2.
    """
    p2 = BASE + [DX, 0.0]
    d1 = BASE.copy()
    d1[[L_WRIST, L_HIP]] = p2[[L_WRIST, L_HIP]]
    anns = [person(BASE, first_id, image_id), person(p2, first_id + 1, image_id)]
    return anns, [det(d1, 0.9, image_id), det(p2, 0.8, image_id)]


def scene_mirrored_neighbour(image_id: int = 1, first_id: int = 1):
    """P3 stands 250 px right of P1. P1's detection puts its left ankle on P3's right ankle.

    Own left ankle 290 px away, own right ankle 250 px away: ks ~ 0. P3's left ankle (the same
    joint) is 40 px away: ks = exp(-1600/1267.36) = 0.283 < 0.5, so an own-first rule that only
    tries other people's same joint calls it a miss; P3's flipped row (its right ankle) gives
    ks 1.0 -> swap. 16 other keypoints good; P3's exact detection 17 good.
    """
    p3 = BASE + [250.0, 0.0]
    d1 = BASE.copy()
    d1[L_ANKLE] = p3[R_ANKLE]
    anns = [person(BASE, first_id, image_id), person(p3, first_id + 1, image_id)]
    return anns, [det(d1, 0.9, image_id), det(p3, 0.8, image_id)]


def scene_hands_together(image_id: int = 1, first_id: int = 1):
    """One person holding the wrists 10 px apart (left (45, 110), right (55, 110)).

    Left wrist detected at (52, 110): own ks exp(-49/615.04) = 0.923 > 0.85 (own-first: good),
    own flipped (the right wrist, 3 px) exp(-9/615.04) = 0.985 -> inversion.
    Right wrist detected at (47, 110): own 8 px -> 0.901, flipped 2 px -> 0.994 -> inversion
    (own-first: good).
    The nose detected DX px off: own ks 0.7^(.062^2/.026^2) ~ 0.13; the nose is its own mirror, so
    the flipped row ties it and the own row, first in order, wins: a miss, never an inversion.
    14 other keypoints good.
    """
    p = BASE.copy()
    p[L_WRIST], p[R_WRIST] = (45.0, 110.0), (55.0, 110.0)
    d = p.copy()
    d[L_WRIST], d[R_WRIST] = (52.0, 110.0), (47.0, 110.0)
    d[NOSE] += [DX, 0.0]
    return [person(p, first_id, image_id)], [det(d, 0.9, image_id)]


def scene_near_own_mirror(image_id: int = 1, first_id: int = 1):
    """Wrists 20 px apart ((40, 110), (60, 110)); right wrist detected at (42, 110).

    Own right wrist 18 px: ks exp(-324/615.04) = 0.590 (own-first: jitter); own left wrist 2 px:
    0.994 -> inversion. 16 other keypoints good.
    """
    p = BASE.copy()
    p[L_WRIST], p[R_WRIST] = (40.0, 110.0), (60.0, 110.0)
    d = p.copy()
    d[R_WRIST] = (42.0, 110.0)
    return [person(p, first_id, image_id)], [det(d, 0.9, image_id)]


def test_neighbours_joint_is_a_swap_even_when_own_is_close():
    anns, dets = scene_neighbour_joint()
    out = analyze_keypoint_errors(gt_file(anns), dets)
    assert out["counts"] == counts(good=32, swap=2)  # own-first rule: good 33, jitter 1


def test_neighbours_mirrored_joint_is_a_swap():
    anns, dets = scene_mirrored_neighbour()
    out = analyze_keypoint_errors(gt_file(anns), dets)
    assert out["counts"] == counts(good=33, swap=1)  # own-first rule: good 33, miss 1


def test_closer_to_own_mirror_is_an_inversion():
    anns, dets = scene_hands_together()
    out = analyze_keypoint_errors(gt_file(anns), dets)
    assert out["counts"] == counts(good=14, inversion=2, miss=1)  # own-first: good 16, miss 1
    anns, dets = scene_near_own_mirror()
    out = analyze_keypoint_errors(gt_file(anns), dets)
    assert out["counts"] == counts(good=16, inversion=1)  # own-first rule: good 16, jitter 1


def test_unlabelled_candidates_never_win():
    """A neighbour whose right ankle is unlabelled (v=0) offers no candidate there: the ankle
    placed on it stays a miss (its left ankle, 40 px away, gives 0.283)."""
    anns, dets = scene_mirrored_neighbour()
    visible = np.full(17, 2.0)
    visible[R_ANKLE] = 0
    anns[1] = person(BASE + [250.0, 0.0], 2, visible=visible)
    out = analyze_keypoint_errors(gt_file(anns), dets)
    assert out["counts"] == counts(good=32, miss=1)  # P3's own right ankle is not counted


def test_crowded_scenes_together():
    """The four scenes as four images of one file: images are analysed independently."""
    anns, dets = [], []
    for image_id, scene in enumerate((scene_neighbour_joint, scene_mirrored_neighbour,
                                      scene_hands_together, scene_near_own_mirror), start=1):
        a, d = scene(image_id, first_id=10 * image_id)
        anns, dets = anns + a, dets + d
    out = analyze_keypoint_errors(gt_file(anns, images=4), dets)
    # own-first rule on the same file: good 98, jitter 2, inversion 0, swap 0, miss 2
    assert out["counts"] == counts(good=95, inversion=3, swap=3, miss=1)
    assert out["false_positives"] == 0 and out["false_negatives"] == 0
    assert out["matched_detections"] == 6


def test_matching_falls_back_to_ignored_ground_truth():
    """A detection inside a crowd region (no keypoints) matches it, as COCOeval lets a detection
    match an ignored ground truth when no counted one is left: not a false positive, and not
    analysed (no keypoints). A person of area 900 < 32^2 is outside coco-analyze's area range:
    missing it is no false negative."""
    crowd = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 40000.0,
             "bbox": [300.0, 0.0, 200.0, 200.0], "num_keypoints": 0, "keypoints": [0] * 51}
    small = person(BASE * [0.3, 0.15] + [600.0, 0.0], 2, area=900.0)
    inside = det(BASE + [320.0, 0.0], 0.9)
    out = analyze_keypoint_errors(gt_file([crowd, small]), [inside])
    assert out["false_positives"] == 0  # own-first rule with no fallback: 1
    assert out["false_negatives"] == 0  # every non-crowd person counted: 1
    assert sum(out["counts"].values()) == 0


def test_small_person_matched_is_analysed():
    """A detection matched to a person outside the area range is still analysed."""
    small = person(BASE * [0.3, 0.15], 1, area=900.0)
    d = BASE * [0.3, 0.15]
    out = analyze_keypoint_errors(gt_file([small]), [det(d, 0.9)])
    assert out["counts"] == counts(good=17) and out["false_positives"] == 0


def test_only_top_20_detections_per_image_are_matched():
    anns = [person(BASE + [30.0 * i, 0.0], i + 1) for i in range(21)]
    dets = [det(BASE + [30.0 * i, 0.0], 0.99 - 0.01 * i) for i in range(21)]
    out = analyze_keypoint_errors(gt_file(anns), dets)
    assert out["matched_detections"] == 20 and out["false_positives"] == 1
    assert out["false_negatives"] == 1


@pytest.mark.parametrize("ks, kind", [(0.9, "good"), (0.7, "jitter"), (0.3, "miss")])
def test_thresholds_on_the_own_keypoint(ks, kind):
    d = BASE.copy()
    d[L_WRIST, 1] += shift_for(ks, L_WRIST)  # moved down, away from every other keypoint
    out = analyze_keypoint_errors(gt_file([person(BASE, 1)]), [det(d, 0.9)])
    expected = counts(good=16)
    expected[kind] += 1
    assert out["counts"] == expected
