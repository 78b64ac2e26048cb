"""coco_stats equals pycocotools on a hand-made corpus with the edge cases; bad input -> DataError."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from compress.core.errors import DataError
from compress.evaluate.metrics.coco import coco_stats, stat_names
from compress.evaluate.metrics.detections import outputs_to_coco_results
from compress.evaluate.metrics.results_file import evaluate_results_file, format_stats_table
from compress.evaluate.metrics.scorer import Scorer

W, H = 200, 160
KP_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
            "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
            "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]


def _poly(x: float, y: float, w: float, h: float) -> list[list[float]]:
    # an octagon inside the box, so masks differ from boxes
    dx, dy = w / 4, h / 4
    return [[x + dx, y, x + w - dx, y, x + w, y + dy, x + w, y + h - dy,
             x + w - dx, y + h, x + dx, y + h, x, y + h - dy, x, y + dy]]


def _keypoints(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[float]:
    kps = []
    for _ in range(17):
        v = int(rng.choice([0, 1, 2], p=[0.15, 0.25, 0.6]))
        px, py = (x + rng.uniform(0, w), y + rng.uniform(0, h)) if v else (0.0, 0.0)
        kps += [float(px), float(py), v]
    return kps


def make_gt(seed: int = 0) -> dict:
    """6 images: 1-4 with objects (incl. tiny ones and a crowd region), 5 and 6 without GT.
    Category 3 ("ghost") has no GT at all."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "width": W, "height": H, "file_name": f"{i}.png"} for i in range(1, 7)]
    anns = []
    for img_id in range(1, 5):
        for j in range(5):
            cat = 1 if j % 2 == 0 else 2
            if j == 4:  # tiny box (area < 32^2, even < 4^2)
                w, h = 3.0, 2.5
            else:
                w, h = float(rng.uniform(20, 120)), float(rng.uniform(20, 120))
            x, y = float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h))
            seg = _poly(x, y, w, h)
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, H, W))
            ann = {"image_id": img_id, "category_id": cat, "bbox": [x, y, w, h], "iscrowd": 0,
                   "segmentation": seg, "area": float(mask_utils.area(rle))}
            if cat == 1:
                ann["keypoints"] = _keypoints(rng, x, y, w, h)
                ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
            anns.append(ann)
    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[100:150, 10:90] = 1
    crowd_rle = mask_utils.encode(crowd)
    anns.append({"image_id": 2, "category_id": 1, "bbox": [10.0, 100.0, 80.0, 50.0], "iscrowd": 1,
                 "segmentation": {"size": [H, W], "counts": crowd_rle["counts"].decode()},
                 "area": float(mask_utils.area(crowd_rle)), "keypoints": [0.0] * 51,
                 "num_keypoints": 0})
    for k, ann in enumerate(anns, 1):
        ann["id"] = k
    cats = [{"id": 1, "name": "person", "keypoints": KP_NAMES, "skeleton": []},
            {"id": 2, "name": "car"}, {"id": 3, "name": "ghost"}]
    return {"images": images, "annotations": anns, "categories": cats}


def _det_box(rng, gt_box):
    x, y, w, h = gt_box
    s = rng.normal(0, 0.08, 4) * [w, h, w, h]
    return [x + s[0], y + s[1], max(w + s[2], 1.0), max(h + s[3], 1.0)]


def make_results(gt: dict, iou_type: str, seed: int = 1) -> list[dict]:
    """Jittered GT copies, duplicates, random false positives, >100 dets on image 1, dets of
    the absent category 3, dets on images without GT, dets in the crowd region."""
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt["annotations"]:
        if iou_type == "keypoints" and ann["category_id"] != 1:
            continue
        for _ in range(int(rng.integers(1, 3))):
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                         "bbox": _det_box(rng, ann["bbox"]), "score": float(rng.uniform(0.2, 1)),
                         "_src": ann})
    counts = {1: 130, 2: 5, 3: 4, 5: 6, 6: 3}
    for img_id, n in counts.items():
        for _ in range(n):
            w, h = float(rng.uniform(2, 90)), float(rng.uniform(2, 90))
            cat = 1 if iou_type == "keypoints" else int(rng.choice([1, 2, 3]))
            dets.append({"image_id": img_id, "category_id": cat, "score": float(rng.uniform(0, 1)),
                         "bbox": [float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h)), w, h]})
    out = []
    for d in dets:
        x, y, w, h = (float(v) for v in d["bbox"])
        r = {"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"]}
        if iou_type == "bbox":
            r["bbox"] = [x, y, w, h]
        elif iou_type == "segm":
            rle = mask_utils.merge(mask_utils.frPyObjects(_poly(x, y, w, h), H, W))
            r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
        else:
            src = d.get("_src")
            kps = np.array(src["keypoints"] if src else _keypoints(rng, x, y, w, h), float).reshape(17, 3)
            kps[:, :2] += rng.normal(0, 1.0, (17, 2))
            kps[:, 0] = np.where(kps[:, 2] > 0, kps[:, 0], rng.uniform(x, x + w, 17))
            kps[:, 1] = np.where(kps[:, 2] > 0, kps[:, 1], rng.uniform(y, y + h, 17))
            kps[:, 2] = 1
            r["keypoints"] = [float(v) for v in kps.reshape(-1)]
        out.append(r)
    return out


def pycocotools_stats(gt: dict, results: list[dict], iou_type: str) -> list[float]:
    """Plain pycocotools, the way its README uses it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        else:  # pycocotools' loadRes cannot take []: an empty result set
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if iou_type == "keypoints":  # COCO scores keypoints on the person category only
            ev.params.catIds = [1]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


@pytest.fixture(scope="module")
def gt() -> dict:
    return make_gt()


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("backend", ["auto", "pycocotools", "faster"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_stats_equal_pycocotools(gt, iou_type, backend, ties):
    results = make_results(gt, iou_type)
    if ties:  # tied scores: the detection order must be the same stable sort as pycocotools'
        for i, r in enumerate(results):
            r["score"] = (0.5, 0.7)[i % 2]
    ref = pycocotools_stats(gt, results, iou_type)
    assert 0.05 < ref[0] < 0.95, ref  # a corpus that exercises the matching, not a trivial 0 or 1
    ours = coco_stats(gt, results, iou_type, backend=backend)
    names = stat_names(iou_type)
    assert len(names) == len(ref)
    for name, value in zip(names, ref):
        assert ours[name] == pytest.approx(value, abs=1e-6), name
    if backend == "faster":
        slow = coco_stats(gt, results, iou_type, backend="pycocotools")["per_category"]
        assert ours["per_category"] == pytest.approx(slow, abs=1e-6)
    if iou_type != "keypoints":
        assert ours["per_category"]["ghost"] == -1.0  # category absent from GT
    assert set(ours["per_category"]) >= {"person"}


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_empty_results_valid(gt, iou_type):
    ref = pycocotools_stats(gt, [], iou_type)
    for backend in ("pycocotools", "faster"):
        ours = coco_stats(gt, [], iou_type, backend=backend)
        assert [ours[n] for n in stat_names(iou_type)] == pytest.approx(ref, abs=1e-6)
    assert ours["AP"] == 0.0


def test_per_category_ap_matches_single_category_eval(gt):
    results = make_results(gt, "bbox")
    ours = coco_stats(gt, results, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.params.catIds = [2]
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ours["per_category"]["car"] == pytest.approx(ev.stats[0], abs=1e-9)


def test_segm_bbox_key_by_convention(gt):
    """Default: pycocotools as is (a bbox sets the area); detectron2: the bbox is dropped."""
    results = make_results(gt, "segm")
    with_box = [dict(r, bbox=mask_utils.toBbox(r["segmentation"]).tolist()) for r in results]
    names = stat_names("segm")
    coco = coco_stats(gt, with_box, "segm")
    assert [coco[n] for n in names] == pytest.approx(pycocotools_stats(gt, with_box, "segm"), abs=1e-6)
    d2 = coco_stats(gt, with_box, "segm", convention="detectron2")
    assert [d2[n] for n in names] == pytest.approx(pycocotools_stats(gt, results, "segm"), abs=1e-6)


def test_perfect_detections_through_the_evaluation_path(gt):
    """Outputs as the detector returns them -> the results the torch evaluation writes -> AP 1."""
    coco_gt = COCO()
    coco_gt.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    predictions = []
    for img_id in range(1, 5):
        anns = [a for a in coco_gt.imgToAnns[img_id] if not a["iscrowd"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns])
        masks = torch.stack([torch.from_numpy(coco_gt.annToMask(a)).float() for a in anns])[:, None]
        predictions.append((img_id, {"boxes": boxes, "scores": torch.ones(len(anns)),
                                     "labels": torch.tensor([a["category_id"] for a in anns]), "masks": masks}))
    results = Scorer(Path("gt.json"), {1: 1, 2: 2, 3: 3}, "segmentation").results(predictions)
    assert coco_stats(gt, results, "bbox")["AP"] == pytest.approx(1.0, abs=1e-6)
    assert coco_stats(gt, results, "segm")["AP"] == pytest.approx(1.0, abs=1e-6)


def test_outputs_to_coco_results_keypoints():
    out = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([1]), "keypoints": torch.rand(1, 17, 3) * 40,
           "keypoints_scores": torch.full((1, 17), 3.0)}
    res = outputs_to_coco_results(7, out, {1: 18}, "keypoints")
    assert res[0]["bbox"] == [10.0, 20.0, 40.0, 60.0]
    assert res[0]["category_id"] == 18 and res[0]["image_id"] == 7
    assert len(res[0]["keypoints"]) == 51 and res[0]["keypoints"][2] == 3.0
    json.dumps(res)


def _write(tmp: Path, name: str, obj) -> Path:
    path = tmp / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_results_file_writes_metrics(tmp_path, gt, iou_type):
    """metrics.json holds every stat pycocotools gives for the files, the return value the same;
    for keypoints, keypoint_errors.json scores the same detections at the same AP."""
    results = make_results(gt, iou_type)
    g, r = _write(tmp_path, "gt.json", gt), _write(tmp_path, "dt.json", results)
    metrics = evaluate_results_file(g, r, iou_type, out_dir=tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    ref = pycocotools_stats(gt, results, iou_type)
    names = stat_names(iou_type)
    assert [saved[iou_type][n] for n in names] == pytest.approx(ref, abs=1e-9)
    assert [metrics[iou_type][n] for n in names] == pytest.approx(ref, abs=1e-9)
    assert 0 < ref[0] < 1 and f"{100 * ref[0]:.1f}" in format_stats_table(metrics)
    errors_file = tmp_path / "out" / "keypoint_errors.json"
    if iou_type != "keypoints":
        assert not errors_file.exists()
        return
    errors = json.loads(errors_file.read_text())
    assert errors["ap"] == pytest.approx(ref[0], abs=1e-9) and errors["detections"] == len(results)
    assert set(errors["counts"]) == {"good", "jitter", "inversion", "swap", "miss"}
    assert sum(errors["counts"].values()) > 0 and 0 < errors["matched_detections"] <= len(results)


@pytest.mark.parametrize("case, needle", [
    ("unknown_image", "unknown image_id"), ("unknown_cat", "unknown category_id"),
    ("segm_without_segmentation", "segmentation"), ("kp_without_keypoints", "keypoints"),
    ("gt_not_coco", "not a COCO"), ("bad_json", "line"), ("results_not_list", "list"),
    ("gt_without_keypoints", "keypoints"),
])
def test_bad_input_raises_data_error(tmp_path, gt, case, needle):
    results = make_results(gt, "bbox")
    iou_type, gt_obj = "bbox", gt
    if case == "unknown_image":
        results[0]["image_id"] = 999
        results[1]["image_id"] = 998
    elif case == "unknown_cat":
        results[3]["category_id"] = 77
    elif case == "segm_without_segmentation":
        iou_type = "segm"
    elif case == "kp_without_keypoints":
        iou_type = "keypoints"
    elif case == "gt_not_coco":
        gt_obj = {"foo": []}
    elif case == "gt_without_keypoints":
        iou_type, results = "keypoints", make_results(gt, "keypoints")
        gt_obj = dict(gt, categories=[{"id": c["id"], "name": c["name"]} for c in gt["categories"]])
    elif case == "results_not_list":
        results = {"annotations": results}
    g = _write(tmp_path, "gt.json", gt_obj)
    r = _write(tmp_path, "dt.json", '[{"image_id": 1,\n "bbox": [1, 2, 3 4]}]' if case == "bad_json" else results)
    with pytest.raises(DataError, match=needle) as info:
        evaluate_results_file(g, r, iou_type)
    assert "\n" not in str(info.value)
    if case == "unknown_image":
        assert "2 result" in str(info.value)


def test_empty_results_file_is_valid(tmp_path, gt):
    g = _write(tmp_path, "gt.json", gt)
    r = _write(tmp_path, "dt.json", [])
    assert evaluate_results_file(g, r, "segm", out_dir=tmp_path)["segm"]["AP"] == 0.0
