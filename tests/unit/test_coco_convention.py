"""segm results carrying both `bbox` and `segmentation`: pycocotools as is by default, detectron2's
convention on request; CLI flag, recipe key and the `convention` recorded in metrics.json."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from compress.cli import main
from compress.core.errors import DataError, RecipeError
from compress.recipe.load import validate
from compress.evaluate.metrics.coco import coco_stats, stat_names
from compress.evaluate.metrics.results_file import evaluate_results_file

W = H = 200


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _square(x: int, y: int, side: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y:y + side, x:x + side] = True
    return mask


def corpus() -> tuple[dict, list[dict]]:
    """4 images, each a medium (40 x 40) and a large (110 x 110) object. Detections: each object
    found with an offset mask whose box is tight, plus medium-sized false positives (40 x 40 masks)
    whose `bbox` is 100 x 100: as large boxes, as medium masks. Scores interleave the two kinds."""
    rng = np.random.default_rng(0)
    images = [{"id": i, "width": W, "height": H} for i in range(1, 5)]
    anns, results = [], []
    for img in range(1, 5):
        for side, (x, y) in ((40, (10, 10)), (110, (80, 80))):
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": 1, "iscrowd": 0,
                         "area": float(side * side), "bbox": [x, y, side, side],
                         "segmentation": _rle(_square(x, y, side))})
            dx, dy = (int(v) for v in rng.integers(0, side // 4, 2))
            mask = _square(x + dx, y + dy, side)
            results.append({"image_id": img, "category_id": 1, "score": float(rng.uniform(0.2, 1)),
                            "segmentation": _rle(mask), "bbox": mask_utils.toBbox(_rle(mask)).tolist()})
        for x in (10, 60):
            results.append({"image_id": img, "category_id": 1, "score": float(rng.uniform(0.2, 1)),
                            "segmentation": _rle(_square(x, 150, 40)),
                            "bbox": [float(x), 100.0, 100.0, 100.0]})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}]}, results


def pycocotools_segm(gt: dict, results: list[dict]) -> list[float]:
    """Plain pycocotools on the results as they are (what the COCO server does)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return list(ev.stats)


def detectron2_segm(gt: dict, results: list[dict]) -> list[float]:
    """detectron2's COCOEvaluator for segm: deep-copy the results, pop "bbox" from each, then
    loadRes + COCOeval as usual."""
    coco_results = copy.deepcopy(results)
    for c in coco_results:
        c.pop("bbox", None)
    return pycocotools_segm(gt, coco_results)


@pytest.fixture(scope="module")
def data():
    gt, results = corpus()
    coco, d2 = pycocotools_segm(gt, results), detectron2_segm(gt, results)
    names = stat_names("segm")
    for size in ("APm", "APl"):  # the corpus tells the two conventions apart
        assert abs(coco[names.index(size)] - d2[names.index(size)]) > 0.05, (size, coco, d2)
    return gt, results, coco, d2


@pytest.mark.parametrize("backend", ["auto", "pycocotools", "faster"])
def test_default_equals_pycocotools_loadres_as_is(data, backend):
    gt, results, coco, _ = data
    ours = coco_stats(gt, results, "segm", backend=backend)
    assert [ours[n] for n in stat_names("segm")] == pytest.approx(coco, abs=1e-6)
    assert ours["convention"] == "coco"


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_detectron2_convention_reproduces_detectron2(data, backend):
    gt, results, _, d2 = data
    ours = coco_stats(gt, results, "segm", backend=backend, convention="detectron2")
    assert [ours[n] for n in stat_names("segm")] == pytest.approx(d2, abs=1e-6)
    assert ours["convention"] == "detectron2"


def test_bbox_scoring_is_the_same_under_both(data):
    gt, results, _, _ = data
    a = coco_stats(gt, results, "bbox")
    b = coco_stats(gt, results, "bbox", convention="detectron2")
    assert [a[n] for n in stat_names("bbox")] == [b[n] for n in stat_names("bbox")]


def test_unknown_convention_refused(data):
    gt, results, _, _ = data
    with pytest.raises(DataError, match="convention"):
        coco_stats(gt, results, "segm", convention="lvis")


def test_cli_default_and_flag_recorded_in_metrics(data, tmp_path, capsys):
    gt, results, coco, d2 = data
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    base = ["evaluate", "--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "dt.json"),
            "--iou-type", "segm"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--convention", "detectron2", "--out", str(tmp_path / "b")]) == 0
    for folder, convention, expected in (("a", "coco", coco), ("b", "detectron2", d2)):
        saved = json.loads((tmp_path / folder / "metrics.json").read_text())["segm"]
        assert saved["convention"] == convention
        assert [saved[n] for n in stat_names("segm")] == pytest.approx(expected, abs=1e-6)
    assert main([*base, "--convention", "lvis"]) == 2
    assert "lvis" in capsys.readouterr().err


def test_results_file_refuses_unknown_convention(data, tmp_path):
    gt, results, _, _ = data
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="convention"):
        evaluate_results_file(tmp_path / "gt.json", tmp_path / "dt.json", "segm", convention="x")


def test_recipe_key(tmp_path):
    base = {"name": "r", "model": {"arch": "maskrcnn"}}
    assert validate({**base, "evaluate": {"convention": "detectron2"}}, "r.yaml") \
        .evaluate.convention == "detectron2"
    assert validate(base, "r.yaml").evaluate.convention == "coco"
    with pytest.raises(RecipeError, match="evaluate.convention"):
        validate({**base, "evaluate": {"convention": "lvis"}}, "r.yaml")
