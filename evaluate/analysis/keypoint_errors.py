"""Keypoint error analysis as Ronchi & Perona count it (ICCV 2017; their coco-analyze code).

Matching is coco-analyze's: pycocotools' COCOeval at a single OKS threshold of 0.1, the top 20
detections per image by score, area range [32^2, 1e5^2]; a detection that finds no counted ground
truth may match an ignored one (crowd, no keypoints, outside the area range) as COCOeval allows.
Every matched detection whose ground truth has keypoints is analysed keypoint by keypoint against
a list of candidates: the matched person's keypoint, the same keypoint of every other annotation
in the image, and all of them again left/right-flipped. The per-keypoint similarity is
ks = exp(-d^2 / (2 s^2 (2 sigma)^2)) with s^2 the candidate's area; a candidate whose keypoint is
not labelled scores -1. The best candidate decides (the first in that order on ties):
good ks > 0.85 on the own keypoint; jitter 0.5 <= ks < 0.85 on the own keypoint; inversion
ks >= 0.5 on the own flipped keypoint; swap ks >= 0.5 on another annotation's keypoint, same or
flipped; miss ks < 0.5 (a best ks of exactly 0.85 on the own keypoint is neither good nor
jitter, as in the reference). Only keypoints labelled in the matched ground truth are counted.
Unmatched detections are background false positives; counted ground truths that no detection
matched are false negatives. The AP gain of an error type is the keypoint AP after moving the
keypoints of that type onto their ground-truth position, minus the base AP.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from compress.core.atomic import write_json
from compress.core.coco_person import COCO_FLIP, flip_permutation
from compress.evaluate.analysis.figures import save_plain
from compress.evaluate.metrics.coco import coco_stats, keypoint_cat_ids, load_gt

log = logging.getLogger(__name__)

ERROR_TYPES = ("good", "jitter", "inversion", "swap", "miss")
FIXABLE_TYPES = ("jitter", "inversion", "swap", "miss")
OKS_MATCH = 0.1
MATCH_MAX_DETS = 20
MATCH_AREA_RANGE = (32.0 ** 2, 1e5 ** 2)
KS_GOOD, KS_NEAR = 0.85, 0.5
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                        1.07, 1.07, .87, .87, .89, .89]) / 10.0


def flip_index(names: Sequence[str] | None, num_keypoints: int) -> tuple[int, ...]:
    """Index of each keypoint's left/right mirror (itself when it has none)."""
    if not names:
        if num_keypoints != len(COCO_FLIP):
            raise ValueError(f"no keypoint names to derive left/right pairs for {num_keypoints} keypoints")
        return COCO_FLIP
    return tuple(flip_permutation(names))


def keypoint_similarity(det_xy: np.ndarray, gt_xy: np.ndarray, area: float, sigmas: np.ndarray) -> np.ndarray:
    """Per-keypoint ks = exp(-d^2 / (2 * area * (2 sigma)^2)) as in COCO's OKS."""
    d2 = np.sum((np.asarray(det_xy, float) - np.asarray(gt_xy, float)) ** 2, axis=-1)
    return np.exp(-d2 / ((2 * sigmas) ** 2) / (area + np.spacing(1)) / 2)


def candidate_similarities(det_xy: np.ndarray, own: dict, others: Sequence[dict], sigmas: np.ndarray,
                           flip: Sequence[int]) -> np.ndarray:
    """(2n, K) ks of each detected keypoint against the candidates, in coco-analyze's row order:
    own, others, own flipped, others flipped; -1 where the candidate's keypoint is unlabelled."""
    rows = []
    for mirrored in (False, True):
        for ann in (own, *others):
            kps = np.asarray(ann["keypoints"], float).reshape(-1, 3)
            if mirrored:
                kps = kps[list(flip)]
            ks = keypoint_similarity(det_xy, kps[:, :2], float(ann["area"]), sigmas)
            rows.append(np.where(kps[:, 2] > 0, ks, -1.0))
    return np.stack(rows)


def classify_keypoints(det: dict, own: dict, others: Sequence[dict], sigmas: np.ndarray,
                       flip: Sequence[int]) -> list[tuple[int, str]]:
    """(keypoint index, error type) for every labelled keypoint of `own` matched to `det`."""
    det_xy = np.asarray(det["keypoints"], float).reshape(-1, 3)[:, :2]
    sims = candidate_similarities(det_xy, own, others, sigmas, flip)
    best, where = np.maximum(sims.max(axis=0), 0.0), sims.argmax(axis=0)
    flipped_own = 1 + len(others)
    labelled = np.asarray(own["keypoints"], float).reshape(-1, 3)[:, 2] != 0
    out = []
    for k in np.flatnonzero(labelled):
        kind = _kind(float(best[k]), int(where[k]), flipped_own)
        if kind is not None:
            out.append((int(k), kind))
    return out


def _kind(best: float, where: int, flipped_own: int) -> str | None:
    if best < KS_NEAR:
        return "miss"
    if where == 0:
        return "good" if best > KS_GOOD else ("jitter" if best < KS_GOOD else None)
    return "inversion" if where == flipped_own else "swap"


def _match_eval(gt: COCO, results: list[dict], sigmas: np.ndarray) -> COCOeval:
    """COCOeval's per-image matching with coco-analyze's settings (OKS 0.1, 20 dets, area range)."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
        p = ev.params
        p.kpt_oks_sigmas = sigmas
        p.catIds = keypoint_cat_ids(gt)
        p.iouThrs, p.maxDets = np.array([OKS_MATCH]), [MATCH_MAX_DETS]
        p.areaRng, p.areaRngLbl = [list(MATCH_AREA_RANGE)], ["all"]
        ev.evaluate()
    return ev


def _matches(ev: COCOeval) -> tuple[list[tuple[int, int]], int]:
    """(detection id, ground-truth id) pairs, and the counted ground truths left unmatched."""
    pairs, missed = [], 0
    for e in filter(None, ev.evalImgs):
        pairs += [(int(d), int(g)) for d, g in zip(e["dtIds"], e["dtMatches"][0]) if g]
        missed += int(np.sum((np.asarray(e["gtMatches"][0]) == 0) & (np.asarray(e["gtIgnore"]) == 0)))
    return pairs, missed


def _is_counted(ann: Mapping[str, Any], cat_ids: set[int]) -> bool:
    lo, hi = MATCH_AREA_RANGE
    return (ann.get("category_id") in cat_ids and not ann.get("iscrowd", 0)
            and ann.get("num_keypoints", 0) > 0 and lo <= ann.get("area", 0) <= hi)


def _candidates(gt: COCO, own: dict) -> list[dict]:
    """The other annotations of the image whose keypoints are comparable with `own`'s."""
    size = len(own["keypoints"])
    return [a for a in gt.imgToAnns[own["image_id"]]
            if a["id"] != own["id"] and len(a.get("keypoints") or ()) == size]


def _corrected(results: list[dict], fixes: list[tuple[int, int, list[float]]]) -> list[dict]:
    out = copy.deepcopy(results)
    for index, k, xy in fixes:
        out[index]["keypoints"][3 * k: 3 * k + 2] = xy
    return out


def _collect(gt: COCO, results: list[dict], sigmas: np.ndarray, flip: Sequence[int]) -> dict[str, Any]:
    counts = dict.fromkeys(ERROR_TYPES, 0)
    fixes: dict[str, list] = {t: [] for t in FIXABLE_TYPES}
    pairs, missed = _matches(_match_eval(gt, results, sigmas))
    for det_id, gt_id in pairs:
        own = gt.anns[gt_id]
        if not own.get("num_keypoints", 0):
            continue
        det = results[det_id - 1]  # loadRes numbers the results 1..N in order
        for k, kind in classify_keypoints(det, own, _candidates(gt, own), sigmas, flip):
            counts[kind] += 1
            if kind in fixes:
                fixes[kind].append((det_id - 1, k, list(own["keypoints"][3 * k: 3 * k + 2])))
    matched = {d for d, _ in pairs}
    return {"counts": counts, "fixes": fixes, "fn": missed, "matched": len(matched),
            "fp_ids": [i for i in range(1, len(results) + 1) if i not in matched]}


def _no_results(gt: COCO) -> dict[str, Any]:
    cat_ids = set(keypoint_cat_ids(gt))
    return {"counts": dict.fromkeys(ERROR_TYPES, 0), "fixes": {t: [] for t in FIXABLE_TYPES},
            "fp_ids": [], "matched": 0,
            "fn": sum(1 for a in gt.dataset["annotations"] if _is_counted(a, cat_ids))}


def _ap_gains(gt: COCO, results: list[dict], found: dict[str, Any], base_ap: float) -> dict[str, float]:
    gains = {}
    for kind, fixes in found["fixes"].items():
        gains[kind] = (coco_stats(gt, _corrected(results, fixes), "keypoints")["AP"] - base_ap
                       if fixes else 0.0)
    fp = set(found["fp_ids"])
    kept = [r for i, r in enumerate(results) if i + 1 not in fp]
    gains["false_positives"] = (coco_stats(gt, kept, "keypoints")["AP"] - base_ap) if fp else 0.0
    return gains


def analyze_keypoint_errors(gt: COCO | Mapping[str, Any] | str | os.PathLike, results: list[dict],
                            out_dir: str | os.PathLike | None = None,
                            sigmas: Sequence[float] | None = None) -> dict[str, Any]:
    """Counts per error type, background FPs / FNs and the AP gain per fixed error type.

    With `out_dir`, writes keypoint_errors.json and two PNG figures there.
    """
    coco_gt = load_gt(gt)
    cat = next((c for c in coco_gt.dataset["categories"] if c.get("keypoints")), {})
    sig = np.asarray(sigmas if sigmas is not None else COCO_SIGMAS, dtype=float)
    flip = flip_index(cat.get("keypoints"), len(sig))
    found = _collect(coco_gt, results, sig, flip) if results else _no_results(coco_gt)
    base_ap = coco_stats(coco_gt, results, "keypoints")["AP"] if results else 0.0
    total = sum(found["counts"].values())
    report = {"counts": found["counts"],
              "fractions": {k: (v / total if total else 0.0) for k, v in found["counts"].items()},
              "false_positives": len(found["fp_ids"]), "false_negatives": found["fn"],
              "matched_detections": found["matched"], "detections": len(results),
              "ap": base_ap, "ap_gain": _ap_gains(coco_gt, results, found, base_ap),
              "matching": {"oks": OKS_MATCH, "max_dets": MATCH_MAX_DETS,
                           "area_range": list(MATCH_AREA_RANGE)}}
    if out_dir is not None:
        write_keypoint_report(report, Path(out_dir))
    return report


def write_keypoint_report(report: dict[str, Any], out_dir: Path) -> None:
    """keypoint_errors.json, keypoint_error_counts.png and keypoint_ap_gain.png in `out_dir`."""
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "keypoint_errors.json", report)
    for name, values, ylabel in (("keypoint_error_counts.png", report["fractions"], "fraction of keypoints"),
                                 ("keypoint_ap_gain.png", report["ap_gain"], "AP gain when fixed")):
        fig = Figure(figsize=(6, 3.5))
        ax = fig.add_subplot()
        ax.bar(list(values), list(values.values()), color="#4c72b0")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=20)
        save_plain(fig, out_dir / name)
