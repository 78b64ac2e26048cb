"""TIDE's figures print nothing from OpenCV (tidecv hands cv2.imwrite a float64 image, which
OpenCV converts to 8 bits with a `imwrite_ Unsupported depth image` warning on stderr)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2

from compress.evaluate.analysis.tide import run_tide


def _corpus(tmp: Path) -> tuple[Path, Path]:
    images = [{"id": i, "width": 64, "height": 64, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    anns, results = [], []
    for img in (1, 2, 3):
        box = [4.0 * img, 5.0, 20.0, 24.0]
        anns.append({"id": img, "image_id": img, "category_id": 1, "bbox": box, "area": 480.0,
                     "iscrowd": 0})
        results.append({"image_id": img, "category_id": 1, "score": 0.9,
                        "bbox": [box[0] + 9.0, 5.0, 20.0, 24.0]})  # a localisation error
        results.append({"image_id": img, "category_id": 1, "score": 0.8, "bbox": [40, 40, 10, 10]})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "dt.json").write_text(json.dumps(results))
    return tmp / "gt.json", tmp / "dt.json"


def test_tide_figure_prints_no_opencv_warning_and_keeps_the_log_level(tmp_path, capfd):
    gt, dt = _corpus(tmp_path)
    level = cv2.getLogLevel()
    capfd.readouterr()
    run_tide(gt, dt, "bbox", tmp_path / "eval", name="ticket")
    captured = capfd.readouterr()
    assert list((tmp_path / "eval" / "figures").glob("*.png"))  # the figure is still written
    assert "Unsupported depth" not in captured.err + captured.out
    assert "WARN" not in captured.err
    assert cv2.getLogLevel() == level
