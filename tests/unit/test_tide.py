"""TIDE on a small generated corpus: numbers, figures, tide.json, the tidecv pitfalls."""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from compress.core.errors import DataError
from compress.evaluate.analysis.tide import MAIN_ERRORS, SPECIAL_ERRORS, compare_tide, run_tide

W = H = 96


def _rle(box):
    m = np.zeros((H, W), np.uint8, order="F")
    x, y, w, h = (int(round(v)) for v in box)
    m[y:y + h, x:x + w] = 1
    r = mask_utils.encode(m)
    return {"size": [H, W], "counts": r["counts"].decode()}


def _corpus(tmp: Path, with_segm: bool) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    images = [{"id": i, "width": W, "height": H} for i in range(1, 9)]  # no file_name: tidecv wants one
    anns, good, bad = [], [], []
    for img in range(1, 9):
        for _ in range(2):
            w, h = rng.uniform(12, 40, 2)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            box = [float(x), float(y), float(w), float(h)]
            cat = int(rng.integers(1, 3))
            ann = {"id": len(anns) + 1, "image_id": img, "category_id": cat, "bbox": box,
                   "area": box[2] * box[3], "iscrowd": 0}
            if with_segm:
                ann["segmentation"] = _rle(box)
            anns.append(ann)
            good.append(_result(img, cat, box, 0.9, with_segm))
            # the "ticket": localisation errors, class confusions, background boxes, misses
            roll = rng.uniform()
            if roll < 0.3:
                shifted = [box[0] + box[2] * 0.35, box[1], box[2], box[3]]
                bad.append(_result(img, cat, shifted, 0.8, with_segm))
            elif roll < 0.55:
                bad.append(_result(img, 3 - cat, box, 0.8, with_segm))
            elif roll < 0.8:
                bad.append(_result(img, cat, box, 0.7, with_segm))
        bad.append(_result(img, 1, [1.0, 1.0, 8.0, 8.0], 0.95, with_segm))
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]}
    paths = (tmp / "gt.json", tmp / "dense.json", tmp / "ticket.json")
    for p, obj in zip(paths, (gt, good, bad)):
        p.write_text(json.dumps(obj))
    return paths


def _result(img, cat, box, score, with_segm):
    r = {"image_id": img, "category_id": cat, "score": score, "bbox": box}
    if with_segm:
        r["segmentation"] = _rle(box)
    return r


def test_tide_bbox_gt_without_segmentation(tmp_path, monkeypatch):
    monkeypatch.delenv("TIDE_PATH", raising=False)
    gt, dense, ticket = _corpus(tmp_path, with_segm=False)
    rc_before = dict(matplotlib.rcParams)
    out = run_tide(gt, ticket, "bbox", tmp_path / "eval", name="ticket")
    assert set(out["main"]) == set(MAIN_ERRORS) and set(out["special"]) == set(SPECIAL_ERRORS)
    assert out["main"]["Loc"] > 0 and out["main"]["Cls"] > 0 and out["main"]["Bkg"] > 0
    assert out["special"]["FalseNeg"] > 0
    assert 0 < out["AP50"] < 100
    saved = json.loads((tmp_path / "eval" / "tide.json").read_text())
    assert saved["bbox"]["main"] == out["main"]
    assert (tmp_path / "eval" / "tide_bbox.png").stat().st_size > 1000
    assert list((tmp_path / "eval" / "figures").glob("*.png"))  # tidecv's own summary figure
    assert "TIDE_PATH" not in os.environ
    assert not list((tmp_path / "eval").glob(".tide_*"))  # temp GT copy and TIDE_PATH cleaned up
    assert matplotlib.rcParams["axes.facecolor"] == rc_before["axes.facecolor"]  # seaborn style undone


def test_tide_perfect_run_has_no_errors(tmp_path):
    gt, dense, _ = _corpus(tmp_path, with_segm=False)
    out = run_tide(gt, dense, "bbox", tmp_path / "eval")
    assert out["AP50"] == pytest.approx(100.0)
    assert all(v == pytest.approx(0.0) for v in out["main"].values())


def test_compare_tide_masks(tmp_path):
    gt, dense, ticket = _corpus(tmp_path, with_segm=True)
    both = compare_tide(dense, ticket, gt, "segm", tmp_path / "cmp")
    assert both["dense"]["AP50"] > both["ticket"]["AP50"]
    assert both["ticket"]["main"]["Bkg"] > both["dense"]["main"]["Bkg"]
    assert (tmp_path / "cmp" / "tide_compare_segm.png").stat().st_size > 1000
    assert json.loads((tmp_path / "cmp" / "tide_compare.json").read_text())["segm"]["ticket"]


def test_tide_segm_needs_gt_masks(tmp_path):
    gt, _, ticket = _corpus(tmp_path, with_segm=False)
    with pytest.raises(DataError, match="segmentation"):
        run_tide(gt, ticket, "segm", tmp_path / "eval")
