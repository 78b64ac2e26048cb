"""Do two runs of a detector give the same detections? Counts, labels, boxes, scores, masks and
keypoints compared image by image (detections of equal score may come in either order); a
comparison that compared nothing is a failure, not a pass."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-3
MASK_FLIP_TOLERANCE = 1e-3  # fraction of mask pixels allowed to flip at the 0.5 threshold


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def match_detections(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> np.ndarray:
    """For each reference detection, the candidate it is compared with: the same index, unless
    detections of (near-)equal score came out in another order. Two runs that differ by float
    rounding may order a tie either way (with random or very sparse heads many scores tie to
    1e-7), so within the same label and scores within SCORE_TOLERANCE, the pairing is the one
    with the smallest total box distance (an assignment, each candidate used once). Boxes far
    apart stay far apart: the check still fails when the detections differ."""
    n = len(ref["boxes"])
    order = np.arange(n)
    if n == 0:
        return order
    boxes_r, boxes_c = ref["boxes"].astype(np.float64), cand["boxes"].astype(np.float64)
    distance = np.abs(boxes_r[:, None, :] - boxes_c[None, :, :]).max(-1)
    allowed = ((np.abs(ref["scores"].astype(np.float64)[:, None]
                       - cand["scores"].astype(np.float64)[None, :]) <= SCORE_TOLERANCE)
               & (np.asarray(ref["labels"])[:, None] == np.asarray(cand["labels"])[None, :]))
    if np.all(np.diag(distance) == 0) or not allowed.any():
        return order
    cost = np.where(allowed, distance, distance.max() * n + 1e9)
    rows, cols = linear_sum_assignment(cost)
    order[rows] = cols
    return order


def compare_image(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, Any]:
    """One image: same detection count and labels, and the largest differences (detections
    paired by `match_detections`)."""
    ref = {k: np.asarray(v) for k, v in reference.items()}
    cand = {k: np.asarray(v) for k, v in candidate.items()}
    n_ref, n_cand = len(ref["boxes"]), len(cand["boxes"])
    out: dict[str, Any] = {"detections": n_ref, "detections_candidate": n_cand}
    if n_ref != n_cand:
        out["mismatch"] = f"{n_cand} detections instead of {n_ref}"
        return out
    order = match_detections(ref, cand)
    out["reordered"] = int(np.count_nonzero(order != np.arange(n_ref)))
    cand = {k: (v[order] if getattr(v, "ndim", 0) and len(v) == n_ref else v) for k, v in cand.items()}
    if not np.array_equal(ref["labels"], cand["labels"]):
        out["mismatch"] = "labels differ"
    out["box_max_abs_diff_px"] = _max_diff(ref["boxes"], cand["boxes"])
    out["score_max_abs_diff"] = _max_diff(ref["scores"], cand["scores"])
    if "masks" in ref:
        flipped = np.count_nonzero((ref["masks"] > 0.5) != (cand["masks"] > 0.5))
        out["mask_pixels_flipped"] = int(flipped)
        out["mask_flip_fraction"] = flipped / max(1, ref["masks"].size)
    if "keypoints" in ref:
        out["keypoint_max_abs_diff_px"] = _max_diff(ref["keypoints"][..., :2],
                                                    cand["keypoints"][..., :2])
    return out


def summarize(pairs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]], *,
              box_tolerance_px: float = BOX_TOLERANCE_PX,
              require_detections: bool = True) -> dict[str, Any]:
    """Compare (reference, candidate) outputs over images; status "ok" only when every image
    matches within tolerance and something was compared (images, and detections unless
    `require_detections` is False)."""
    images = [compare_image(ref, cand) for ref, cand in pairs]
    compared = sum(image["detections"] for image in images if "mismatch" not in image)
    worst = {key: max((image.get(key, 0.0) for image in images), default=0.0)
             for key in ("box_max_abs_diff_px", "score_max_abs_diff", "mask_flip_fraction",
                         "keypoint_max_abs_diff_px")}
    result = {"images": len(images), "detections_compared": compared,
              "detections_reordered": sum(image.get("reordered", 0) for image in images),
              "box_tolerance_px": box_tolerance_px, **worst,
              "mask_pixels_flipped": sum(image.get("mask_pixels_flipped", 0) for image in images)}
    problems = [f"image {i}: {image['mismatch']}" for i, image in enumerate(images)
                if "mismatch" in image]
    if worst["box_max_abs_diff_px"] > box_tolerance_px:
        problems.append(f"boxes differ by {worst['box_max_abs_diff_px']:.3g} px "
                        f"(tolerance {box_tolerance_px} px)")
    if worst["score_max_abs_diff"] > SCORE_TOLERANCE:
        problems.append(f"scores differ by {worst['score_max_abs_diff']:.3g}")
    if worst["mask_flip_fraction"] > MASK_FLIP_TOLERANCE:
        problems.append(f"{worst['mask_flip_fraction']:.2%} of mask pixels flipped")
    if worst["keypoint_max_abs_diff_px"] > box_tolerance_px:
        problems.append(f"keypoints differ by {worst['keypoint_max_abs_diff_px']:.3g} px")
    if not images:
        problems.append("compared nothing: no images")
    elif require_detections and compared == 0:
        problems.append(f"compared nothing: no detections on {len(images)} images")
    result["status"] = "failed" if problems else "ok"
    if problems:
        result["reason"] = "; ".join(problems)
    return result


CONFIDENT_SCORE = 0.5  # INT8 parity: detections this sure must agree on both sides
INT8_MIN_IOU = 0.85  # a 1-2 px shift of a small box (20-30 px at the smoke size) is IoU ~0.85-0.9
# INT8 arithmetic noise: the same QDQ backbone on ONNX Runtime with and without its graph
# optimizations (which fuse Q/DQ into integer kernels) differs by 4% of its output range at the
# smoke size; a rounding step moved early moves proposals, so a few confident detections may
# land elsewhere on one engine and not the other
INT8_MIN_AGREEMENT = 0.75


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def summarize_int8(pairs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, Any]:
    """Parity of two INT8 runs (or INT8 against fake-quantized torch), judged on what a user
    sees: an activation on a rounding boundary may land one step apart in another summation
    order, which moves a low-scoring detection across the score threshold or an NMS tie. So
    detections are paired by IoU (same label, an assignment), and every detection scoring
    >= CONFIDENT_SCORE on either side should have a partner at IoU >= INT8_MIN_IOU: the check
    fails when fewer than INT8_MIN_AGREEMENT of them do; with nothing confident to compare it
    is "unchecked" (never "ok").
    The accuracy gate is the mAP comparison of the quantize stage, not this."""
    confident = agreed = 0
    worst_iou, worst_score, unmatched = 1.0, 0.0, 0
    images = 0
    for reference, candidate in pairs:
        images += 1
        ref = {k: np.asarray(v) for k, v in reference.items()}
        cand = {k: np.asarray(v) for k, v in candidate.items()}
        sure_r = ref["scores"] >= CONFIDENT_SCORE
        sure_c = cand["scores"] >= CONFIDENT_SCORE
        partner_r = np.full(len(sure_r), -1)
        if len(sure_r) and len(sure_c):
            iou = _iou(ref["boxes"], cand["boxes"])
            iou[np.asarray(ref["labels"])[:, None] != np.asarray(cand["labels"])[None, :]] = 0
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= 0.5:
                    partner_r[r] = c
        partner_c = np.full(len(sure_c), -1)
        partner_c[partner_r[partner_r >= 0]] = np.nonzero(partner_r >= 0)[0]
        for r in np.nonzero(sure_r)[0]:
            confident += 1
            c = partner_r[r]
            value = float(_iou(ref["boxes"][r:r + 1], cand["boxes"][c:c + 1])[0, 0]) if c >= 0 else 0.0
            worst_iou = min(worst_iou, value)
            agreed += value >= INT8_MIN_IOU
            if c >= 0:
                worst_score = max(worst_score, abs(float(ref["scores"][r]) - float(cand["scores"][c])))
        for c in np.nonzero(sure_c & (partner_c < 0))[0]:
            confident += 1
            unmatched += 1
            worst_iou = 0.0
    result = {"images": images, "confident_score": CONFIDENT_SCORE, "min_iou": INT8_MIN_IOU,
              "confident_detections": confident, "agreed": agreed, "unpaired_candidate": unmatched,
              "agreement": agreed / confident if confident else None,
              "min_agreement": INT8_MIN_AGREEMENT,
              "worst_iou": worst_iou if confident else None,
              "score_max_abs_diff_confident": worst_score}
    if confident == 0:  # e.g. an untrained model: nothing to judge, which is not a pass
        return {**result, "status": "unchecked",
                "reason": f"compared nothing: no detection scores >= {CONFIDENT_SCORE} on "
                          f"{images} images (an untrained model?)"}
    problems = []
    if agreed < INT8_MIN_AGREEMENT * confident:
        problems.append(f"{confident - agreed} of {confident} confident detections have no "
                        f"partner at IoU >= {INT8_MIN_IOU} (worst IoU {worst_iou:.3f}; at least "
                        f"{INT8_MIN_AGREEMENT:.0%} must agree)")
    result["status"] = "failed" if problems else "ok"
    if problems:
        result["reason"] = "; ".join(problems)
    return result
