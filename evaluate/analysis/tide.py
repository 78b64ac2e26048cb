"""TIDE error analysis (tidecv) for boxes and masks: main and special errors as dAP, figures, tide.json.

tidecv pitfalls handled here: its COCO loader needs `segmentation` (and `iscrowd`, `file_name`)
on every GT annotation even in box mode, so a temp copy of the GT gets box polygons where they
are missing; `tidecv.datasets.COCO()` without a path downloads COCO, so paths are always passed;
its plotter writes into TIDE_PATH/_tmp and calls seaborn.set() (global style), so TIDE_PATH is
pointed at a run-local folder and the rc params are restored afterwards. dAP values are in AP
points (0-100), as tidecv reports them.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from compress.core.atomic import write_json
from compress.core.errors import DataError
from compress.evaluate.analysis.figures import save_plain
from compress.evaluate.metrics.results_file import read_json, validate_gt, validate_results

log = logging.getLogger(__name__)

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
_MODES = {"bbox": "bbox", "segm": "mask"}
PLOT_QUALITY = 0.25  # tidecv renders at 500*quality dpi; 1.0 takes tens of seconds per figure


def _box_polygon(bbox: Sequence[float]) -> list[list[float]]:
    x, y, w, h = (float(v) for v in bbox)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def tide_ready_gt(gt: dict, iou_type: str, path: str) -> dict:
    """A copy of `gt` that tidecv's loader accepts: segmentation, iscrowd and file_name filled in."""
    out = dict(gt, images=[dict(img) for img in gt["images"]], annotations=[])
    for img in out["images"]:
        img.setdefault("file_name", f"{img['id']}.jpg")
    for ann in gt["annotations"]:
        ann = dict(ann)
        if "segmentation" not in ann:
            if iou_type == "segm":
                raise DataError(f"annotation {ann.get('id')} has no 'segmentation': cannot run mask TIDE",
                                file=path)
            ann["segmentation"] = _box_polygon(ann["bbox"])
        ann.setdefault("iscrowd", 0)
        out["annotations"].append(ann)
    return out


@contextlib.contextmanager
def _tide_env(tide_path: Path) -> Iterator[None]:
    import matplotlib

    matplotlib.use("Agg")
    old = os.environ.get("TIDE_PATH")
    os.environ["TIDE_PATH"] = str(tide_path)
    try:
        with matplotlib.rc_context({"text.parse_math": False}), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if old is None:
            os.environ.pop("TIDE_PATH", None)
        else:
            os.environ["TIDE_PATH"] = old


def _evaluate_runs(gt_path: str | os.PathLike, runs: dict[str, str | os.PathLike], iou_type: str,
                   out_dir: Path, plot: bool = True) -> dict[str, dict[str, Any]]:
    """Run TIDE for each named results file; returns {name: {AP50, main, special}}."""
    if iou_type not in _MODES:
        raise DataError(f"TIDE iou type {iou_type!r} is not one of bbox, segm")
    gt = read_json(gt_path)
    validate_gt(gt, str(gt_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tide_") as tmp, _tide_env(Path(tmp)):
        from tidecv import TIDE, datasets

        gt_copy = Path(tmp) / "gt.json"
        gt_copy.write_text(json.dumps(tide_ready_gt(gt, iou_type, str(gt_path))))
        tide = TIDE(mode=_MODES[iou_type])
        tide.plotter.quality = PLOT_QUALITY
        gt_data = datasets.COCO(path=str(gt_copy))
        for name, results_path in runs.items():
            results = read_json(results_path)
            validate_results(results, gt, iou_type, str(results_path))
            tide.evaluate(gt_data, datasets.COCOResult(str(results_path), name=name), name=name)
        errors = tide.get_all_errors()
        if plot:
            _tidecv_plot(tide, out_dir / "figures")
    return {name: {"AP50": float(run.ap),
                   "main": {k: float(errors["main"][name][k]) for k in MAIN_ERRORS},
                   "special": {k: float(errors["special"][name][k]) for k in SPECIAL_ERRORS}}
            for name, run in tide.runs.items()}


@contextlib.contextmanager
def _opencv_errors_only() -> Iterator[None]:
    """OpenCV's log at ERROR for the block, then as it was. tidecv's summary figure pads the
    uint8 plot images with float64 `np.zeros(...) + 255`, so `cv2.imwrite` gets a float64 image
    of whole numbers in 0..255 and converts it to 8 bits (losslessly) with a warning on stderr
    that no `--quiet` can reach."""
    import cv2

    level = cv2.getLogLevel()
    cv2.setLogLevel(2)  # cv2.utils.logging.LOG_LEVEL_ERROR
    try:
        yield
    finally:
        cv2.setLogLevel(level)


def _tidecv_plot(tide: Any, fig_dir: Path) -> None:
    """tidecv's summary figure per run (its TIDE.plot divides by the error sum: skip clean runs)."""
    import math

    errors = tide.get_all_errors()
    fig_dir.mkdir(parents=True, exist_ok=True)
    plotter = tide.plotter
    for key, attr in (("main", "MAX_MAIN_DELTA_AP"), ("special", "MAX_SPECIAL_DELTA_AP")):
        top = max(max(e.values()) for e in errors[key].values())
        setattr(plotter, attr, max(getattr(plotter, attr), math.ceil(top / 5) * 5))
    for name, run in tide.runs.items():
        if sum(errors["main"][name].values()) <= 0:
            log.warning("TIDE: run %s has no errors; tidecv's pie chart is undefined, skipped", name)
            continue
        with _opencv_errors_only():
            plotter.make_summary_plot(str(fig_dir), errors, name, run.mode, hbar_names=True)


def _bar_chart(series: dict[str, dict[str, float]], title: str, out_png: Path) -> None:
    """Grouped bars: one group per error type, one bar per run."""
    import numpy as np
    from matplotlib.figure import Figure

    names = list(MAIN_ERRORS + SPECIAL_ERRORS)
    fig = Figure(figsize=(8, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(names))
    for i, (run, values) in enumerate(series.items()):
        merged = {**values["main"], **values["special"]}
        ax.bar(x + i * width - 0.4 + width / 2, [merged[n] for n in names], width, label=run)
    ax.set_xticks(x, names)
    ax.set_ylabel("dAP (AP points)")
    ax.set_title(title)
    ax.legend()
    save_plain(fig, out_png)


def _merge_tide_json(path: Path, iou_type: str, entry: dict[str, Any]) -> None:
    current = json.loads(path.read_text()) if path.exists() else {}
    current[iou_type] = entry
    write_json(path, current)


def run_tide(gt_path: str | os.PathLike, results_path: str | os.PathLike, iou_type: str,
             out_dir: str | os.PathLike, name: str = "model") -> dict[str, Any]:
    """TIDE for one results file. Writes tidecv's figure under out_dir/figures, our bar chart
    out_dir/tide_<iou_type>.png and merges {iou_type: {AP50, main, special}} into tide.json."""
    out = Path(out_dir)
    entry = _evaluate_runs(gt_path, {name: results_path}, iou_type, out)[name]
    _bar_chart({name: entry}, f"TIDE {iou_type}: {name}", out / f"tide_{iou_type}.png")
    _merge_tide_json(out / "tide.json", iou_type, entry)
    return entry


def compare_tide(results_a: str | os.PathLike, results_b: str | os.PathLike,
                 gt_path: str | os.PathLike, iou_type: str, out_dir: str | os.PathLike,
                 names: tuple[str, str] = ("dense", "ticket")) -> dict[str, dict[str, Any]]:
    """Two runs side by side (the supplement's Figures 2-3): one grouped bar chart
    tide_compare_<iou_type>.png, tidecv's figure for each, tide_compare.json."""
    if names[0] == names[1]:
        raise DataError(f"compare_tide needs two different run names, got {names[0]!r} twice")
    out = Path(out_dir)
    both = _evaluate_runs(gt_path, {names[0]: results_a, names[1]: results_b}, iou_type, out)
    _bar_chart(both, f"TIDE {iou_type}: {names[0]} vs {names[1]}", out / f"tide_compare_{iou_type}.png")
    _merge_tide_json(out / "tide_compare.json", iou_type, both)
    return both
