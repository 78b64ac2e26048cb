"""PASCAL VOC AP at IoU 0.5, per class and mean: the VOC07 11-point rule and the area rule.

The computation is the classic `voc_eval` / `voc_ap` of py-faster-rcnn, which detectron2's Pascal
VOC evaluator runs as well, step for step: one class at a time, the detections in the order they
come (image by image) are sorted by `np.argsort(-score)` (numpy's default sort, so tied scores
end in the order that sort leaves them, as there); each takes the ground-truth box it overlaps
most; IoU > 0.5 on a difficult object makes it neither TP nor FP, on an unclaimed object a TP, on
a claimed one a FP; IoU <= 0.5 (or no object of the class in the image) a FP. Recall is over the
non-difficult objects; precision divides by max(tp + fp, eps).

Ground truth comes in COCO format (the VOC bridge's): an annotation's `difficult` flag (or, when
absent, `iscrowd`) marks a difficult object. Boxes are continuous xywh. The bridge stores a VOC box
(1-based inclusive corners) as [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1] and the
detectors predict continuous boxes, so the plain IoU here equals the classic +1-pixel IoU on the
devkit's corners with detections written back as detectron2 writes them (xmin + 1, ymin + 1, xmax,
ymax). `pixel_offset=1.0` applies the +1 widths to boxes given in inclusive corners instead.

One departure: a class without non-difficult ground truth gets -1 and is left out of the means
(the classic code divides by zero there: NaN or 0); VOC's own test sets have every class.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from compress.core.errors import DataError
from compress.evaluate.metrics.coco import load_gt

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


def is_difficult(ann: Mapping[str, Any]) -> bool:
    """The VOC difficult flag of a COCO-format annotation (the bridge writes `difficult`)."""
    return bool(ann.get("difficult", ann.get("iscrowd", 0)))


def class_pr(gt_by_image: Mapping[int, list[dict]], dets: Sequence[Mapping[str, Any]],
             offset: float = 0.0, iou_threshold: float = IOU_THRESHOLD
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """(recall, precision, number of non-difficult objects) of one class, as `voc_eval` has them.

    `gt_by_image` must hold every evaluated image (an image without objects of the class maps to
    an empty list); `dets` are this class's detections in their original order.
    """
    boxes = {i: np.array([a["bbox"] for a in anns], float).reshape(-1, 4)
             for i, anns in gt_by_image.items()}
    difficult = {i: np.array([is_difficult(a) for a in anns], bool) for i, anns in gt_by_image.items()}
    claimed = {i: np.zeros(len(anns), bool) for i, anns in gt_by_image.items()}
    npos = int(sum((~flags).sum() for flags in difficult.values()))
    confidence = np.array([d["score"] for d in dets], float)
    order = np.argsort(-confidence)
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for rank, index in enumerate(order):
        det = dets[index]
        image = det["image_id"]
        gts, best = boxes[image], -np.inf
        if gts.size:
            overlaps = _iou(np.asarray(det["bbox"], float), gts, offset)
            best, j = float(np.max(overlaps)), int(np.argmax(overlaps))
        if best > iou_threshold:
            if not difficult[image][j]:
                if not claimed[image][j]:
                    tp[rank], claimed[image][j] = 1.0, True
                else:
                    fp[rank] = 1.0
        else:
            fp[rank] = 1.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(npos, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, npos


def voc_ap(gt: COCO | Mapping[str, Any] | str | os.PathLike, results: Sequence[Mapping[str, Any]],
           pixel_offset: float = 0.0) -> dict[str, Any]:
    """Per-class and mean AP50 of COCO-format `results` against `gt`, VOC07 11-point and area.

    Returns {"voc07_mAP50", "voc_area_mAP50", "per_class": {name: {"voc07_AP50", "voc_area_AP50",
    "objects", "difficult", "detections"}}, "iou_threshold", "rule"}; a class without
    non-difficult objects gets -1 and is left out of the means.
    """
    coco = load_gt(gt)
    images = {image_id: [] for image_id in coco.imgs}
    unknown = {r["image_id"] for r in results} - set(images)
    if unknown:
        raise DataError(f"results hold image ids absent from the ground truth, e.g. "
                        f"{sorted(unknown)[:3]}")
    gt_by_cat: dict[int, dict[int, list[dict]]] = defaultdict(lambda: {i: [] for i in images})
    for ann in coco.dataset["annotations"]:
        gt_by_cat[ann["category_id"]][ann["image_id"]].append(ann)
    dets_by_cat: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for det in results:
        dets_by_cat[det["category_id"]].append(det)
    per_class = {}
    for cat in sorted(coco.cats):
        rec, prec, npos = class_pr(gt_by_cat[cat], dets_by_cat[cat], pixel_offset)
        hard = sum(is_difficult(a) for anns in gt_by_cat[cat].values() for a in anns)
        per_class[coco.cats[cat].get("name", str(cat))] = {
            "voc07_AP50": voc07_ap(rec, prec) if npos else -1.0,
            "voc_area_AP50": area_ap(rec, prec) if npos else -1.0,
            "objects": npos, "difficult": hard, "detections": len(dets_by_cat[cat])}
    return {"voc07_mAP50": _mean(per_class, "voc07_AP50"),
            "voc_area_mAP50": _mean(per_class, "voc_area_AP50"), "per_class": per_class,
            "iou_threshold": IOU_THRESHOLD,
            "rule": "classic voc_eval (py-faster-rcnn / detectron2): difficult objects ignored"}


def _mean(per_class: Mapping[str, Mapping[str, float]], key: str) -> float:
    values = [row[key] for row in per_class.values() if row[key] >= 0]
    return float(np.mean(values)) if values else -1.0
