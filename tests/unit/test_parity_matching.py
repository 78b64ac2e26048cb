"""Parity pairs detections by index, except among ties: two runs that differ by float rounding
may order detections of equal score either way; a real difference still fails."""
from __future__ import annotations

import numpy as np

from compress.evaluate.runtimes.parity import summarize


def _dets(boxes, scores, labels):
    return {"boxes": np.array(boxes, np.float32), "scores": np.array(scores, np.float32),
            "labels": np.array(labels, np.int64)}


def test_tied_detections_in_another_order_match():
    ref = _dets([[0, 0, 10, 10], [50, 50, 90, 90], [5, 5, 20, 20]], [0.9, 0.9, 0.5], [1, 1, 2])
    cand = _dets([[50, 50, 90, 90], [0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.9, 0.5], [1, 1, 2])
    result = summarize([(ref, cand)], box_tolerance_px=0.01)
    assert result["status"] == "ok" and result["detections_reordered"] == 2
    assert result["box_max_abs_diff_px"] == 0.0


def test_a_swap_of_different_scores_or_a_moved_box_fails():
    ref = _dets([[0, 0, 10, 10], [50, 50, 90, 90]], [0.9, 0.5], [1, 1])
    swapped = _dets([[50, 50, 90, 90], [0, 0, 10, 10]], [0.9, 0.5], [1, 1])
    assert summarize([(ref, swapped)], box_tolerance_px=0.01)["status"] == "failed"
    moved = _dets([[0, 0, 10, 10], [51, 50, 90, 90]], [0.9, 0.5], [1, 1])
    bad = summarize([(ref, moved)], box_tolerance_px=0.01)
    assert bad["status"] == "failed" and "boxes differ by 1 px" in bad["reason"]


def test_masks_follow_their_detection():
    masks = np.zeros((2, 1, 4, 4), np.float32)
    masks[0, 0, 0, 0] = 1.0
    ref = {**_dets([[0, 0, 1, 1], [2, 2, 4, 4]], [0.7, 0.7], [1, 1]), "masks": masks}
    cand = {**_dets([[2, 2, 4, 4], [0, 0, 1, 1]], [0.7, 0.7], [1, 1]), "masks": masks[::-1].copy()}
    result = summarize([(ref, cand)], box_tolerance_px=0.01)
    assert result["status"] == "ok" and result["mask_pixels_flipped"] == 0
