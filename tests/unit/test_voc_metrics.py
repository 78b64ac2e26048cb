"""VOC07 11-point and area AP on a toy case, against a hand calculation."""
from __future__ import annotations

import numpy as np
import pytest

from compress.evaluate.metrics.voc import area_ap, voc07_ap, voc_ap


def _ann(ann_id, img, cat, box, crowd=0):
    return {"id": ann_id, "image_id": img, "category_id": cat, "bbox": box, "iscrowd": crowd,
            "area": box[2] * box[3]}


def _det(img, cat, box, score):
    return {"image_id": img, "category_id": cat, "bbox": box, "score": score}


GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
    "annotations": [
        _ann(1, 1, 1, [0, 0, 10, 10]), _ann(2, 1, 1, [20, 20, 10, 10]),
        _ann(3, 2, 1, [0, 0, 10, 10]), _ann(4, 2, 1, [30, 30, 10, 10], crowd=1),  # difficult
        _ann(5, 1, 2, [50, 50, 20, 20]),
    ],
}
RESULTS = [
    # class a: TP, TP, (difficult: ignored), duplicate FP, background FP, TP
    _det(1, 1, [0, 0, 10, 10], 0.95), _det(1, 1, [20, 20, 10, 10], 0.90),
    _det(2, 1, [30, 30, 10, 10], 0.85), _det(1, 1, [0.5, 0, 10, 10], 0.80),
    _det(2, 1, [60, 60, 10, 10], 0.70), _det(2, 1, [1, 1, 10, 10], 0.60),
    # class b: FP on the wrong image, then TP at IoU 320/480 = 0.667
    _det(2, 2, [50, 50, 20, 20], 0.9), _det(1, 2, [54, 50, 20, 20], 0.8),
    # class c: no GT at all
    _det(1, 3, [0, 0, 5, 5], 0.5),
]


def test_toy_case_matches_hand_calculation():
    out = voc_ap(GT, RESULTS)
    # class a, npos = 3 (the difficult one excluded); without the ignored det:
    # recall 1/3, 2/3, 2/3, 2/3, 1 and precision 1, 1, 2/3, 1/2, 3/5.
    # VOC07: t = 0..0.6 (7 points) max precision 1; t = 0.7..1.0 (4 points) 3/5 -> (7 + 4*0.6)/11
    a07 = (7 * 1.0 + 4 * 0.6) / 11
    # area: recall 0 -> 2/3 at precision 1, 2/3 -> 1 at 3/5 -> 2/3 + 1/5 = 13/15
    a_area = 2 / 3 + (1 / 3) * (3 / 5)
    # class b: recall 0, 1 and precision 0, 1/2 -> 0.5 for both
    assert out["per_class"]["a"]["voc07_AP50"] == pytest.approx(a07, abs=1e-12)
    assert out["per_class"]["a"]["voc_area_AP50"] == pytest.approx(13 / 15, abs=1e-12)
    assert a_area == pytest.approx(13 / 15)
    assert out["per_class"]["b"]["voc07_AP50"] == pytest.approx(0.5, abs=1e-12)
    assert out["per_class"]["b"]["voc_area_AP50"] == pytest.approx(0.5, abs=1e-12)
    assert out["per_class"]["c"]["voc07_AP50"] == -1.0
    assert out["voc07_mAP50"] == pytest.approx((a07 + 0.5) / 2, abs=1e-12)
    assert out["voc_area_mAP50"] == pytest.approx((13 / 15 + 0.5) / 2, abs=1e-12)


def test_difficult_match_neither_tp_nor_fp():
    only_difficult = [_det(2, 1, [30, 30, 10, 10], 0.9)]
    out = voc_ap(GT, only_difficult)
    assert out["per_class"]["a"]["voc07_AP50"] == 0.0 and out["per_class"]["a"]["voc_area_AP50"] == 0.0


def test_ap_functions_on_perfect_curve():
    rec, prec = np.array([0.5, 1.0]), np.array([1.0, 1.0])
    assert voc07_ap(rec, prec) == pytest.approx(1.0)
    assert area_ap(rec, prec) == pytest.approx(1.0)


def test_pixel_offset_changes_iou():
    # IoU of [0,0,10,10] vs [5,0,10,10]: continuous 50/150 = 1/3 -> FP; devkit +1: 66/154 still < .5
    # [0,0,10,10] vs [3,0,10,10]: continuous 70/130 = 0.538 TP; devkit 88/154 = 0.571 TP
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [_ann(1, 1, 1, [0, 0, 10, 10])]}
    assert voc_ap(gt, [_det(1, 1, [3, 0, 10, 10], 0.9)])["voc_area_mAP50"] == 1.0
    assert voc_ap(gt, [_det(1, 1, [5, 0, 10, 10], 0.9)], pixel_offset=1.0)["voc_area_mAP50"] == 0.0
