"""Keypoint error analysis after Ronchi & Perona (ICCV 2017), the project's own implementation.

Detections are matched to GT persons greedily by score at OKS >= 0.1 (OKS as pycocotools computes
it; pycocotools' own COCOeval supplies the OKS matrices). Every visible GT keypoint of a matched
detection is classified with the per-keypoint similarity ks = exp(-d^2 / (2 s^2 k^2)), s^2 the GT
area and k = 2 sigma (the COCO constants):
Good ks >= 0.85 and Jitter 0.5 <= ks < 0.85 against the matched person; Inversion ks >= 0.5
against the same person's left/right-flipped keypoint; Swap ks >= 0.5 against the same keypoint
of another person in the image; Miss otherwise. Unmatched detections are background false
positives, unmatched GT persons false negatives. The AP gain of an error type is the keypoint AP
after moving the detections' keypoints of that type onto their GT position, minus the base AP.
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
from evaluate.metrics.coco import coco_stats, load_gt, restrict_keypoint_cats

logger = logging.getLogger(__name__)

ERROR_TYPES = ("good", "jitter", "inversion", "swap", "miss")
FIXABLE_TYPES = ("jitter", "inversion", "swap", "miss")
OKS_MATCH = 0.1
KS_GOOD, KS_NEAR = 0.85, 0.5
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                        1.07, 1.07, .87, .87, .89, .89]) / 10.0
COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def flip_index(names: Sequence[str] | None, num_keypoints: int) -> tuple[int, ...]:
    """Index of each keypoint's left/right mirror (itself when it has none)."""
    if not names:
        if num_keypoints != len(COCO_FLIP):
            raise ValueError(f"no keypoint names to derive left/right pairs for {num_keypoints} keypoints")
        return COCO_FLIP
    pos = {n: i for i, n in enumerate(names)}
    swap = {"left": "right", "right": "left"}
    out = []
    for n in names:
        head, sep, tail = n.partition("_")
        out.append(pos.get(swap[head] + sep + tail, pos[n]) if head in swap else pos[n])
    return tuple(out)


def keypoint_similarity(det_xy: np.ndarray, gt_xy: np.ndarray, area: float, sigmas: np.ndarray) -> np.ndarray:
    """Per-keypoint ks = exp(-d^2 / (2 * area * (2 sigma)^2)) as in COCO's OKS."""
    d2 = np.sum((np.asarray(det_xy, float) - np.asarray(gt_xy, float)) ** 2, axis=-1)
    return np.exp(-d2 / ((2 * sigmas) ** 2) / (area + np.spacing(1)) / 2)


def _run_cocoeval(gt: COCO, results: list[dict], sigmas: np.ndarray) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
        ev.params.kpt_oks_sigmas = sigmas
        restrict_keypoint_cats(ev, gt, "keypoints")
        ev.evaluate()
    return ev


def _match(ev: COCOeval, key: tuple[int, int]) -> tuple[list[tuple[dict, dict]], list[dict], list[dict]]:
    """Greedy score-ordered matching at OKS >= 0.1 -> (pairs, unmatched dets, unmatched gts)."""
    dts = sorted(ev._dts[key], key=lambda d: -d["score"])[: ev.params.maxDets[-1]]
    gts = ev._gts[key]
    ious = np.asarray(ev.ious.get(key, []), dtype=float)
    valid = [not g["ignore"] for g in gts]
    taken: set[int] = set()
    pairs, lone_dts = [], []
    for i, det in enumerate(dts):
        best, best_j = OKS_MATCH, -1
        for j, gt in enumerate(gts):
            if valid[j] and j not in taken and ious.size and ious[i, j] >= best:
                best, best_j = ious[i, j], j
        if best_j < 0:
            lone_dts.append(det)
        else:
            taken.add(best_j)
            pairs.append((det, gts[best_j]))
    lone_gts = [g for j, g in enumerate(gts) if valid[j] and j not in taken]
    return pairs, lone_dts, lone_gts


def classify_keypoints(det: dict, gt: dict, others: Sequence[dict], sigmas: np.ndarray,
                       flip: Sequence[int]) -> list[tuple[int, str]]:
    """(keypoint index, error type) for every visible keypoint of `gt` matched to `det`."""
    d = np.asarray(det["keypoints"], float).reshape(-1, 3)[:, :2]
    g = np.asarray(gt["keypoints"], float).reshape(-1, 3)
    own = keypoint_similarity(d, g[:, :2], gt["area"], sigmas)
    flipped = keypoint_similarity(d, g[list(flip), :2], gt["area"], sigmas[list(flip)])
    out = []
    for k in np.flatnonzero(g[:, 2] > 0):
        if own[k] >= KS_GOOD:
            kind = "good"
        elif own[k] >= KS_NEAR:
            kind = "jitter"
        elif flip[k] != k and g[flip[k], 2] > 0 and flipped[k] >= KS_NEAR:
            kind = "inversion"
        elif any(_other_ks(d[k], o, k, sigmas) >= KS_NEAR for o in others):
            kind = "swap"
        else:
            kind = "miss"
        out.append((int(k), kind))
    return out


def _other_ks(det_xy: np.ndarray, other: dict, k: int, sigmas: np.ndarray) -> float:
    o = np.asarray(other["keypoints"], float).reshape(-1, 3)
    if o[k, 2] <= 0:
        return 0.0
    return float(keypoint_similarity(det_xy, o[k, :2], other["area"], sigmas[k]))


def _corrected(results: list[dict], fixes: list[tuple[int, int, list[float]]]) -> list[dict]:
    out = copy.deepcopy(results)
    for index, k, xy in fixes:
        out[index]["keypoints"][3 * k: 3 * k + 2] = xy
    return out


def _collect(ev: COCOeval, sigmas: np.ndarray, flip: Sequence[int]) -> dict[str, Any]:
    counts = dict.fromkeys(ERROR_TYPES, 0)
    fixes: dict[str, list] = {t: [] for t in FIXABLE_TYPES}
    fp_ids: list[int] = []
    fn = matched = 0
    for key in sorted(ev._gts.keys() | ev._dts.keys()):
        pairs, lone_dts, lone_gts = _match(ev, key)
        fp_ids += [d["id"] for d in lone_dts]
        fn += len(lone_gts)
        matched += len(pairs)
        persons = [g for g in ev._gts[key] if not g.get("iscrowd", 0)]
        for det, gt in pairs:
            others = [o for o in persons if o["id"] != gt["id"]]
            for k, kind in classify_keypoints(det, gt, others, sigmas, flip):
                counts[kind] += 1
                if kind in fixes:
                    fixes[kind].append((det["id"] - 1, k, list(gt["keypoints"][3 * k: 3 * k + 2])))
    return {"counts": counts, "fixes": fixes, "fp_ids": fp_ids, "fn": fn, "matched": matched}


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
    base_ap = coco_stats(coco_gt, results, "keypoints")["AP"] if results else 0.0
    if not results:
        found = {"counts": dict.fromkeys(ERROR_TYPES, 0), "fixes": {t: [] for t in FIXABLE_TYPES},
                 "fp_ids": [], "matched": 0,
                 "fn": sum(1 for a in coco_gt.dataset["annotations"]
                           if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0)}
    else:
        found = _collect(_run_cocoeval(coco_gt, results, sig), sig, flip)
    gains = {}
    for kind, fixes in found["fixes"].items():
        gains[kind] = (coco_stats(coco_gt, _corrected(results, fixes), "keypoints")["AP"] - base_ap
                       if fixes else 0.0)
    fp = set(found["fp_ids"])
    kept = [r for i, r in enumerate(results) if i + 1 not in fp]
    gains["false_positives"] = (coco_stats(coco_gt, kept, "keypoints")["AP"] - base_ap) if fp else 0.0
    total = sum(found["counts"].values())
    report = {"counts": found["counts"],
              "fractions": {k: (v / total if total else 0.0) for k, v in found["counts"].items()},
              "false_positives": len(fp), "false_negatives": found["fn"],
              "matched_detections": found["matched"], "detections": len(results),
              "ap": base_ap, "ap_gain": gains}
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
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
