"""Time the toolkit's COCO evaluation (compress.evaluate.metrics.coco.coco_stats) against plain pycocotools.

Generates 5,000 images, ~7 GT boxes each over 80 categories, and 100,000 bbox detections
(jittered GT copies and background boxes), evaluates both ways, checks the 12 stats agree,
prints the times and their ratio and writes benchmarks/results/coco_eval.json.

    PYTHONPATH=. python benchmarks/bench_coco_eval.py [--images 5000] [--detections 100000]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.core.atomic import write_json  # noqa: E402
from compress.evaluate.metrics.coco import DET_STAT_NAMES, coco_stats  # noqa: E402

W, H, CATEGORIES = 640, 480, 80


def make_corpus(n_images: int, n_dets: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    n_gt = n_images * 7
    img_ids = rng.integers(1, n_images + 1, n_gt)
    wh = np.exp(rng.uniform(np.log(4), np.log(300), (n_gt, 2)))
    xy = rng.uniform(0, 1, (n_gt, 2)) * (np.array([W, H]) - wh).clip(1)
    cats = rng.integers(1, CATEGORIES + 1, n_gt)
    anns = [{"id": i + 1, "image_id": int(img_ids[i]), "category_id": int(cats[i]), "iscrowd": 0,
             "bbox": [float(xy[i, 0]), float(xy[i, 1]), float(wh[i, 0]), float(wh[i, 1])],
             "area": float(wh[i, 0] * wh[i, 1])} for i in range(n_gt)]
    gt = {"images": [{"id": i, "width": W, "height": H} for i in range(1, n_images + 1)],
          "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in range(1, CATEGORIES + 1)]}
    n_true = min(n_dets // 2, n_gt)
    src = rng.choice(n_gt, n_true, replace=False)
    jitter = rng.normal(0, 0.08, (n_true, 4)) * np.concatenate([wh[src], wh[src]], axis=1)
    boxes = np.concatenate([xy[src], wh[src]], axis=1) + jitter
    boxes[:, 2:] = boxes[:, 2:].clip(1)
    n_bg = n_dets - n_true
    bg_wh = np.exp(rng.uniform(np.log(4), np.log(300), (n_bg, 2)))
    bg = np.concatenate([rng.uniform(0, 1, (n_bg, 2)) * (np.array([W, H]) - bg_wh).clip(1), bg_wh], axis=1)
    all_boxes = np.concatenate([boxes, bg])
    all_imgs = np.concatenate([img_ids[src], rng.integers(1, n_images + 1, n_bg)])
    all_cats = np.concatenate([np.where(rng.uniform(size=n_true) < 0.9, cats[src],
                                        rng.integers(1, CATEGORIES + 1, n_true)),
                               rng.integers(1, CATEGORIES + 1, n_bg)])
    scores = np.concatenate([rng.uniform(0.3, 1, n_true), rng.uniform(0, 0.8, n_bg)])
    dets = [{"image_id": int(all_imgs[i]), "category_id": int(all_cats[i]), "score": float(scores[i]),
             "bbox": [float(v) for v in all_boxes[i]]} for i in range(n_dets)]
    return gt, dets


def plain_pycocotools(gt: dict, dets: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "coco_eval.json"))
    args = parser.parse_args()
    gt, dets = make_corpus(args.images, args.detections)
    gt_ref, dets_ref = copy.deepcopy(gt), copy.deepcopy(dets)

    t0 = time.perf_counter()
    ours = coco_stats(gt, dets, "bbox")
    toolkit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = plain_pycocotools(gt_ref, dets_ref)
    pycocotools_s = time.perf_counter() - t0

    max_diff = max(abs(ours[n] - r) for n, r in zip(DET_STAT_NAMES, ref))
    result = {"images": args.images, "detections": args.detections, "gt_boxes": len(gt["annotations"]),
              "categories": CATEGORIES, "toolkit_s": round(toolkit_s, 3),
              "toolkit_backend": ours["backend"], "pycocotools_s": round(pycocotools_s, 3),
              "speedup": round(pycocotools_s / toolkit_s, 2), "max_abs_stat_diff": max_diff,
              "AP": ours["AP"], "cpu_count": os.cpu_count(), "python": platform.python_version()}
    write_json(args.out, result)
    print(f"{'images':>8} {'dets':>8} {'toolkit s':>10} {'pycocotools s':>14} {'speedup':>8} {'max diff':>9}")
    print(f"{args.images:>8} {args.detections:>8} {toolkit_s:>10.2f} {pycocotools_s:>14.2f} "
          f"{pycocotools_s / toolkit_s:>7.1f}x {max_diff:>9.1e}")


if __name__ == "__main__":
    main()
