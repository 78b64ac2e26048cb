"""PASCAL VOC AP at IoU 0.5: VOC07 11-point and area ("all-point", VOC2010+) per class and mAP.

Same algorithm as the VOC devkit's / faster-rcnn.pytorch's `voc_eval`: detections sorted by score,
each matched to the unmatched GT with the highest IoU if that IoU > 0.5; a match on a difficult GT
is neither TP nor FP; a second match on the same GT is a FP. GT comes in COCO format, where
`iscrowd: 1` (or an explicit `difficult: 1`) marks a difficult object (the dataset bridge's
convention). Boxes are continuous xywh; `pixel_offset=1.0` reproduces the devkit's inclusive
pixel (+1) widths.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from evaluate.metrics.coco import load_gt

IOU_THRESHOLD = 0.5


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """11-point interpolated AP (VOC2007): mean over t in {0, .1, ..., 1} of max precision at recall >= t."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = precision[recall >= t]
        ap += (float(np.max(p)) if p.size else 0.0) / 11.0
    return ap


def area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope (VOC2010+ "all-point" AP)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _iou(box: np.ndarray, gts: np.ndarray, offset: float) -> np.ndarray:
    """IoU of one xywh box against (N,4) xywh boxes."""
    x1 = np.maximum(gts[:, 0], box[0])
    y1 = np.maximum(gts[:, 1], box[1])
    x2 = np.minimum(gts[:, 0] + gts[:, 2], box[0] + box[2])
    y2 = np.minimum(gts[:, 1] + gts[:, 3], box[1] + box[3])
    inter = np.maximum(x2 - x1 + offset, 0.0) * np.maximum(y2 - y1 + offset, 0.0)
    area_d = (box[2] + offset) * (box[3] + offset)
    area_g = (gts[:, 2] + offset) * (gts[:, 3] + offset)
    return inter / (area_d + area_g - inter)


def class_pr(gt_by_image: Mapping[int, list[dict]], dets: list[dict],
             offset: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """(recall, precision, number of non-difficult GT) for one class."""
    boxes = {i: np.array([a["bbox"] for a in anns], float).reshape(-1, 4) for i, anns in gt_by_image.items()}
    difficult = {i: np.array([bool(a.get("difficult", a.get("iscrowd", 0))) for a in anns])
                 for i, anns in gt_by_image.items()}
    used = {i: np.zeros(len(anns), bool) for i, anns in gt_by_image.items()}
    npos = int(sum((~d).sum() for d in difficult.values()))
    order = sorted(dets, key=lambda d: -d["score"])
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for n, det in enumerate(order):
        img = det["image_id"]
        gts = boxes.get(img, np.zeros((0, 4)))
        overlaps = _iou(np.asarray(det["bbox"], float), gts, offset) if len(gts) else np.zeros(0)
        j = int(np.argmax(overlaps)) if overlaps.size else -1
        if j < 0 or overlaps[j] <= IOU_THRESHOLD:
            fp[n] = 1
        elif difficult[img][j]:
            continue
        elif not used[img][j]:
            tp[n], used[img][j] = 1, True
        else:
            fp[n] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(npos, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, npos


def voc_ap(gt: COCO | Mapping[str, Any] | str | os.PathLike, results: Sequence[Mapping[str, Any]],
           pixel_offset: float = 0.0) -> dict[str, Any]:
    """Per-class and mean AP (VOC07 11-point and area) at IoU 0.5.

    Returns {"ap07": {name: AP}, "ap_area": {name: AP}, "mAP07", "mAP_area"}; a class without
    non-difficult GT gets -1 and is left out of the means.
    """
    coco = load_gt(gt)
    gt_by_cat: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for ann in coco.dataset["annotations"]:
        gt_by_cat[ann["category_id"]][ann["image_id"]].append(ann)
    dets_by_cat: dict[int, list[dict]] = defaultdict(list)
    for det in results:
        dets_by_cat[det["category_id"]].append(det)
    ap07, ap_area = {}, {}
    for cat in sorted(coco.cats):
        name = coco.cats[cat].get("name", str(cat))
        rec, prec, npos = class_pr(gt_by_cat[cat], dets_by_cat[cat], pixel_offset)
        ap07[name] = voc07_ap(rec, prec) if npos else -1.0
        ap_area[name] = area_ap(rec, prec) if npos else -1.0
    return {"ap07": ap07, "ap_area": ap_area, "mAP07": _mean(ap07), "mAP_area": _mean(ap_area),
            "iou_threshold": IOU_THRESHOLD}


def _mean(per_class: Mapping[str, float]) -> float:
    values = [v for v in per_class.values() if v >= 0]
    return float(np.mean(values)) if values else -1.0
