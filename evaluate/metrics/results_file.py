"""`compress evaluate --gt GT.json --results DT.json`: validate, score, print, write metrics.json."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from compress.core.atomic import write_json
from compress.core.errors import DataError
from compress.evaluate.metrics import results_checks as checks
from compress.evaluate.metrics.coco import CONVENTIONS, IOU_TYPES, coco_stats, load_gt, stat_names
from compress.evaluate.analysis.keypoint_errors import analyze_keypoint_errors

log = logging.getLogger(__name__)

_RESULT_KEY = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing file or bad JSON is a one-line DataError with line/col."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError as err:
        raise DataError("file not found", file=str(path)) from err
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON at line {err.lineno} col {err.colno}: {err.msg}",
                        file=str(path)) from err
    except UnicodeDecodeError as err:
        raise DataError("not a UTF-8 JSON file", file=str(path)) from err
    except RecursionError as err:
        raise DataError("JSON nested too deeply to read; allowed: a COCO file (a few levels deep)",
                        file=str(path)) from err


def validate_gt(gt: Any, path: str) -> None:
    """A COCO GT is an object with lists `images`, `annotations`, `categories`."""
    if not isinstance(gt, dict):
        raise DataError(f"not a COCO annotation file: top level is {type(gt).__name__}, "
                        "expected an object with images, annotations, categories", file=path)
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(gt.get(k), list)]
    if missing:
        raise DataError(f"not a COCO annotation file: missing list(s) {', '.join(missing)} "
                        "(expected images, annotations, categories)", file=path)
    for key, required in (("images", "id"), ("categories", "id"),
                          ("annotations", "image_id")):
        bad = sum(1 for item in gt[key] if not isinstance(item, dict) or required not in item)
        if bad:
            raise DataError(f"not a COCO annotation file: {bad} entries of {key} lack {required!r}",
                            key=key, file=path)


def validate_gt_for(gt: dict, iou_type: str, path: str) -> None:
    """The GT must carry what the iou type scores: masks for segm, keypoints for keypoints."""
    if iou_type == "segm":
        bad = sum(1 for a in gt["annotations"] if "segmentation" not in a)
        if bad:
            raise DataError(f"{bad} annotation(s) lack 'segmentation': cannot score segm", file=path)
    if iou_type == "keypoints":
        kp_cats = {c["id"] for c in gt["categories"] if c.get("keypoints")}
        if not kp_cats:
            raise DataError("no category defines 'keypoints': cannot score keypoints", file=path)
        bad = sum(1 for a in gt["annotations"] if a.get("category_id") in kp_cats
                  and not ("keypoints" in a and "num_keypoints" in a))
        if bad:
            raise DataError(f"{bad} annotation(s) of keypoint categories lack 'keypoints' or "
                            "'num_keypoints'", file=path)


def _unknown(results: list[dict], field: str, known: set[int], path: str) -> None:
    bad = [r.get(field) for r in results if r.get(field) not in known]
    if bad:
        shown = ", ".join(str(v) for v in sorted(set(map(str, bad)))[:5])
        raise DataError(f"{len(bad)} result(s) reference unknown {field} ({shown}); "
                        f"{field} must be one of the GT's {len(known)} ids", file=path)


def _kp_count(gt: dict) -> int | None:
    counts = {len(c["keypoints"]) for c in gt["categories"] if c.get("keypoints")}
    return counts.pop() if len(counts) == 1 else None


def validate_results(results: Any, gt: dict, iou_type: str, path: str) -> list[dict]:
    """Results are a list of objects with image_id, category_id, score and the iou type's key,
    of the right types and values (results_checks); returns them, bad boxes dropped (warned)."""
    if not isinstance(results, list):
        raise DataError(f"results must be a JSON list of detections, got {type(results).__name__}",
                        file=path)
    if not results:
        return results
    for field in ("image_id", "category_id", "score"):
        missing = sum(1 for r in results if not isinstance(r, dict) or field not in r)
        if missing:
            raise DataError(f"{missing} result(s) lack {field!r}", file=path)
    key = _RESULT_KEY[iou_type]
    missing = sum(1 for r in results if key not in r)
    if missing:
        raise DataError(f"{missing} of {len(results)} result(s) lack {key!r}: not a {iou_type} "
                        f"results file (use --iou-type matching its contents)", file=path)
    checks.check_types(results, path)
    _unknown(results, "image_id", {img["id"] for img in gt["images"]}, path)
    _unknown(results, "category_id", {c["id"] for c in gt["categories"]}, path)
    _check_shapes(results, gt, iou_type, path)
    checks.check_numbers(results, "bbox", path, "[x, y, w, h], 4 numbers", optional=True)
    if iou_type == "segm":
        checks.check_rles(results, gt, path)
    if iou_type == "keypoints":
        checks.check_numbers(results, "keypoints", path, "a flat list of numbers [x, y, v] * K")
    return checks.drop_bad_boxes(results, path)


def _check_shapes(results: list[dict], gt: dict, iou_type: str, path: str) -> None:
    if iou_type == "bbox":
        bad = sum(1 for r in results if not (isinstance(r["bbox"], list) and len(r["bbox"]) == 4))
        allowed = "[x, y, w, h]"
    elif iou_type == "segm":
        bad = sum(1 for r in results if not (isinstance(r["segmentation"], dict)
                                             and {"size", "counts"} <= set(r["segmentation"])))
        allowed = "an RLE {size, counts}"
    else:
        n = _kp_count(gt)
        bad = sum(1 for r in results if not isinstance(r["keypoints"], list)
                  or len(r["keypoints"]) % 3 or (n is not None and len(r["keypoints"]) != 3 * n))
        allowed = f"a flat list of {n if n else 'K'} x [x, y, v]"
    if bad:
        raise DataError(f"{bad} result(s) have a malformed {_RESULT_KEY[iou_type]!r}; allowed: {allowed}",
                        file=path)


def format_stats_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per iou type, one column per stat (x100, 1 decimal)."""
    lines = []
    for iou_type, stats in metrics.items():
        names = stat_names(iou_type)
        lines.append(f"{iou_type:<10}" + "".join(f"{n:>7}" for n in names))
        lines.append(" " * 10 + "".join(f"{100 * stats[n]:>7.1f}" if stats[n] >= 0 else f"{'-':>7}"
                                        for n in names))
    return "\n".join(lines)


def evaluate_results_file(gt_path: str | os.PathLike, results_path: str | os.PathLike,
                          iou_type: str = "bbox", out_dir: str | os.PathLike | None = None,
                          convention: str = "coco") -> dict:
    """Validate and score a COCO results file; write `out_dir/metrics.json` (and for keypoints
    `keypoint_errors.json`). Returns {iou_type: stats dict}; each records its `convention`:
    "coco" (pycocotools' loadRes as is) or "detectron2" (segm results scored without `bbox`)."""
    if iou_type not in IOU_TYPES:
        raise DataError(f"--iou-type {iou_type!r} is not one of {', '.join(IOU_TYPES)}")
    if convention not in CONVENTIONS:
        raise DataError(f"--convention {convention!r} is not one of {', '.join(CONVENTIONS)}")
    gt = read_json(gt_path)
    validate_gt(gt, str(gt_path))
    validate_gt_for(gt, iou_type, str(gt_path))
    results = read_json(results_path)
    results = validate_results(results, gt, iou_type, str(results_path))
    coco_gt = load_gt(gt)
    metrics = {iou_type: coco_stats(coco_gt, results, iou_type, convention=convention)}
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "metrics.json", metrics)
        if iou_type == "keypoints":
            analyze_keypoint_errors(coco_gt, results, out_dir=out)
    return metrics
