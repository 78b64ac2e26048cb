"""torchvision detector outputs -> COCO-format result dicts (as torchvision's references do)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

TASKS = ("detection", "segmentation", "keypoints")
MASK_THRESHOLD = 0.5


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def boxes_xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 2] -= out[:, 0]
    out[:, 3] -= out[:, 1]
    return out


def masks_to_rles(masks: np.ndarray, threshold: float = MASK_THRESHOLD) -> list[dict]:
    """(N,1,H,W) or (N,H,W) probabilities -> RLEs (counts as str, JSON-ready)."""
    masks = np.asarray(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    binary = np.asfortranarray((masks > threshold).transpose(1, 2, 0).astype(np.uint8))
    rles = mask_utils.encode(binary) if len(masks) else []
    out = []
    for rle in rles:
        counts = rle["counts"]
        out.append({"size": [int(s) for s in rle["size"]],
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts})
    return out


def outputs_to_coco_results(image_id: int, outputs: Mapping[str, Any],
                            label_to_cat_id: Mapping[int, int], task: str) -> list[dict]:
    """One COCO result dict per detection of one image.

    Every result holds image_id, category_id, bbox (xywh) and score; "segmentation" adds an RLE of
    the mask thresholded at 0.5; "keypoints" adds the flat [x, y, v] * K list where v is the
    model's keypoint score (COCO ignores v in results; the score is kept as information).
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} not in {TASKS}")
    boxes = boxes_xyxy_to_xywh(_to_numpy(outputs["boxes"]))
    scores = _to_numpy(outputs["scores"]).reshape(-1)
    labels = _to_numpy(outputs["labels"]).reshape(-1)
    results = [{"image_id": int(image_id), "category_id": int(label_to_cat_id[int(lab)]),
                "bbox": [float(v) for v in box], "score": float(score)}
               for box, score, lab in zip(boxes, scores, labels)]
    if task == "segmentation" and "masks" in outputs:
        for res, rle in zip(results, masks_to_rles(_to_numpy(outputs["masks"]))):
            res["segmentation"] = rle
    if task == "keypoints" and "keypoints" in outputs:
        kps = _to_numpy(outputs["keypoints"]).astype(np.float64)
        kp_scores = outputs.get("keypoints_scores")
        if kp_scores is not None:
            kps = kps.copy()
            kps[..., 2] = _to_numpy(kp_scores)
        for res, kp in zip(results, kps):
            res["keypoints"] = [float(v) for v in kp.reshape(-1)]
    return results
