"""COCO metrics: the 12 (keypoints: 10) COCO stats and per-category AP.

pycocotools is the reference, used as it is (what the COCO evaluation server runs): a segm result
that also carries a `bbox` gets the box's area from `loadRes`, and that area decides its size range
(small / medium / large). The "detectron2" convention drops `bbox` from segm results first, as
detectron2's COCOEvaluator does, so the mask's area decides. faster-coco-eval is used as the fast
path only for the iou types where the test corpus (tests/unit/test_coco_metrics.py) shows it
equals pycocotools to 1e-6.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from compress.core.errors import DataError

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm", "keypoints")
DET_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                  "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
KP_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# iou types where faster-coco-eval matched pycocotools to 1e-6 on the corpus (see tests).
FAST_IOU_TYPES = frozenset({"bbox", "segm", "keypoints"})
BACKENDS = ("auto", "pycocotools", "faster")
CONVENTIONS = ("coco", "detectron2")


def stat_names(iou_type: str) -> tuple[str, ...]:
    """Names of the stats pycocotools' summarize() returns for `iou_type`, in order."""
    return KP_STAT_NAMES if iou_type == "keypoints" else DET_STAT_NAMES


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise DataError(f"iou type {iou_type!r} is not one of {', '.join(IOU_TYPES)}")


def load_gt(gt: COCO | Mapping[str, Any] | str | os.PathLike, verbose: bool = False) -> COCO:
    """A pycocotools COCO from a COCO object, a dataset dict or a path (prints quieted)."""
    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, Mapping):
        dataset = shallow_dataset(gt)
    else:
        with open(gt) as handle:
            dataset = json.load(handle)
    coco = COCO()
    coco.dataset = dataset
    with _quiet(verbose):
        coco.createIndex()
    return coco


def shallow_dataset(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """A copy whose annotation/image/category dicts are new (the evaluators set top-level keys
    such as `ignore` or replace `segmentation` on them) but whose nested values are shared.
    Much cheaper than a deepcopy on 100k annotations."""
    out = dict(dataset)
    for key in ("images", "annotations", "categories"):
        if isinstance(out.get(key), list):
            out[key] = [dict(item) if isinstance(item, Mapping) else item for item in out[key]]
    return out


def _load_results(results: Sequence[Mapping[str, Any]] | str | os.PathLike) -> list[dict]:
    if isinstance(results, (str, os.PathLike)):
        with open(results) as handle:
            return json.load(handle)
    return list(results)


@contextlib.contextmanager
def _quiet(verbose: bool):
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise DataError(f"convention {convention!r} is not one of {', '.join(CONVENTIONS)}")


def prepare_results(results: list[dict], iou_type: str, convention: str = "coco") -> list[dict]:
    """Copied results (new dicts, shared nested values) as the evaluator should see them.

    "coco" leaves them as they are. "detectron2" drops `bbox` from segm results: with a bbox
    present, pycocotools' loadRes takes the box area as the instance area, which changes which
    size range (small/medium/large) a mask detection falls in.
    """
    _check_convention(convention)
    out = [dict(r) for r in results]  # loadRes sets top-level keys only (id, area, ...)
    if iou_type == "segm" and convention == "detectron2":
        for r in out:
            r.pop("bbox", None)
    return out


def _empty_results_coco(gt: COCO, coco_cls: type) -> Any:
    res = coco_cls()
    res.dataset = {"images": list(gt.dataset.get("images", [])), "annotations": [],
                   "categories": copy.deepcopy(gt.dataset.get("categories", []))}
    res.createIndex()
    return res


def keypoint_cat_ids(gt: COCO) -> list[int]:
    """Categories that define keypoints (COCO: person); all categories when none does."""
    ids = sorted(c["id"] for c in gt.dataset.get("categories", []) if c.get("keypoints"))
    return ids or sorted(gt.getCatIds())


def restrict_keypoint_cats(ev: Any, gt: COCO, iou_type: str) -> None:
    # pycocotools evaluates keypoints over every category and fails on annotations without
    # num_keypoints (e.g. cars in a mixed file); both backends score keypoint categories only.
    if iou_type == "keypoints":
        ev.params.catIds = keypoint_cat_ids(gt)


def _run_pycocotools(gt: COCO, results: list[dict], iou_type: str) -> COCOeval:
    dt = gt.loadRes(results) if results else _empty_results_coco(gt, COCO)
    ev = COCOeval(gt, dt, iou_type)
    restrict_keypoint_cats(ev, gt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def _run_faster(gt: COCO, results: list[dict], iou_type: str) -> Any:
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster

    fast_gt = FastCOCO(shallow_dataset(gt.dataset))
    dt = fast_gt.loadRes(results) if results else _empty_results_coco(fast_gt, FastCOCO)
    ev = COCOeval_faster(fast_gt, dt, iou_type, print_function=log.debug)
    restrict_keypoint_cats(ev, gt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def per_category_ap(precision: np.ndarray, cat_ids: Sequence[int], gt: COCO) -> dict[str, float]:
    """AP@[.5:.95] per category name from pycocotools' precision array [T,R,K,A,M] (area all, maxDets 100).

    A category with no ground truth gets -1, as pycocotools reports it.
    """
    out: dict[str, float] = {}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        name = gt.cats.get(cat_id, {}).get("name", str(cat_id))
        out[name] = float(np.mean(p)) if p.size else -1.0
    return out


def coco_stats(gt: COCO | Mapping[str, Any] | str | os.PathLike,
               results: Sequence[Mapping[str, Any]] | str | os.PathLike,
               iou_type: str, *, backend: str = "auto", verbose: bool = False,
               convention: str = "coco") -> dict[str, Any]:
    """COCO stats of `results` against `gt` for one iou type.

    Returns {AP, AP50, ... (12 names; keypoints: 10), "per_category": {name: AP},
    "size": {small, medium, large AP}, "backend", "convention"}. Empty results are valid: AP 0
    where GT exists, -1 where pycocotools gives -1. `backend` "auto" uses faster-coco-eval where it
    is proven equal; `convention` is "coco" (pycocotools as is) or "detectron2" (see the module).
    """
    _check_iou_type(iou_type)
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} not in {BACKENDS}")
    coco_gt = load_gt(gt, verbose)
    dets = prepare_results(_load_results(results), iou_type, convention)
    use_fast = backend == "faster" or (backend == "auto" and iou_type in FAST_IOU_TYPES)
    with _quiet(verbose):
        ev = _run_faster(coco_gt, dets, iou_type) if use_fast else _run_pycocotools(coco_gt, dets, iou_type)
    names = stat_names(iou_type)
    stats: dict[str, Any] = {n: float(v) for n, v in zip(names, ev.stats[: len(names)])}
    cat_ids = list(ev.params.catIds) if ev.params.useCats else []
    stats["per_category"] = per_category_ap(np.asarray(ev.eval["precision"]), cat_ids, coco_gt)
    stats["size"] = {"small": stats.get("APs", -1.0), "medium": stats["APm"], "large": stats["APl"]}
    stats["backend"] = "faster-coco-eval" if use_fast else "pycocotools"
    stats["convention"] = convention
    return stats
