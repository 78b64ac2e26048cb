"""The VOC metric as the run reports it equals the classic `voc_eval` (py-faster-rcnn, run by
detectron2's Pascal VOC evaluator) on a hand-made VOC folder with difficult objects and tied scores.

The reference below is a transcription of the classic code (parse_rec / voc_ap / voc_eval, with
detections written as detectron2's evaluator writes them: `id score xmin+1 ymin+1 xmax ymax`),
independent of the production code; the production side goes through the VOC-to-COCO bridge and
`Scorer.score`, as a VOC run does.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from compress.core.atomic import write_json
from compress.data.voc import voc_to_coco
from compress.evaluate.metrics.scorer import Scorer


# ----------------------------------------------------------------- the classic code, transcribed
def classic_parse_rec(filename: Path) -> list[dict]:
    tree = ET.parse(filename)
    objects = []
    for obj in tree.findall("object"):
        bbox = obj.find("bndbox")
        objects.append({"name": obj.find("name").text, "difficult": int(obj.find("difficult").text),
                        "bbox": [int(bbox.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")]})
    return objects


def classic_voc_ap(rec, prec, use_07_metric=False):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def classic_voc_eval(lines, annopath, imagenames, classname, ovthresh=0.5, use_07_metric=False):
    recs = {name: classic_parse_rec(Path(annopath.format(name))) for name in imagenames}
    class_recs = {}
    npos = 0
    for imagename in imagenames:
        R = [obj for obj in recs[imagename] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R])
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}
    splitlines = [x.strip().split(" ") for x in lines]
    image_ids = [x[0] for x in splitlines]
    confidence = np.array([float(x[1]) for x in splitlines])
    BB = np.array([[float(z) for z in x[2:]] for x in splitlines]).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, classic_voc_ap(rec, prec, use_07_metric)


def detectron2_lines(results: list[dict], names: dict[int, str], category_id: int) -> list[str]:
    """detectron2's PascalVOCDetectionEvaluator.process: per image in order, per instance."""
    lines = []
    for r in results:
        if r["category_id"] != category_id:
            continue
        x, y, w, h = r["bbox"]
        xmin, ymin, xmax, ymax = x + 1, y + 1, x + w, y + h
        lines.append(f"{names[r['image_id']]} {r['score']:.3f} {xmin:.1f} {ymin:.1f} "
                     f"{xmax:.1f} {ymax:.1f}")
    return lines


# ----------------------------------------------------------------- the hand-made set
# VOC boxes: 1-based inclusive corners (xmin, ymin, xmax, ymax); (class, box, difficult).
IMAGES = {
    "000001": [("cat", (11, 11, 50, 50), 0), ("cat", (61, 11, 100, 50), 1),
               ("dog", (11, 61, 40, 100), 0), ("dog", (21, 61, 50, 100), 0)],
    "000002": [("cat", (1, 1, 30, 30), 0), ("dog", (51, 51, 90, 90), 1),
               ("dog", (11, 11, 40, 40), 0), ("car", (5, 5, 20, 20), 1)],
    "000003": [("dog", (31, 31, 70, 70), 0), ("cat", (71, 71, 100, 100), 0)],
    "000004": [],
}


def det(image_id: int, cat: int, x1: float, y1: float, x2: float, y2: float, score: float) -> dict:
    """A detection in continuous corners, as a COCO result (x, y, w, h)."""
    return {"image_id": image_id, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score}


CAT, DOG, CAR, PERSON = 8, 12, 7, 15  # VOC class order, 1-based

# In image order, each image's detections in the model's order (what the run writes). Scores
# have 3 decimals (detectron2's file keeps 3) and many tie; coordinates are halves (exact).
RESULTS = [
    det(1, CAT, 10, 10, 50, 50, 0.9),          # TP
    det(1, CAT, 60, 10, 100, 50, 0.9),         # difficult: neither TP nor FP (tied with the TP)
    det(1, CAT, 12.5, 10, 50, 50, 0.5),        # duplicate of a claimed object: FP
    det(1, DOG, 12, 60, 42, 100, 0.75),        # best IoU: the first dog -> TP
    det(1, DOG, 13, 60, 43, 100, 0.75),        # best IoU: the first dog again, claimed -> FP
    #                                            (the second dog, IoU > .5, is not taken instead)
    det(1, DOG, 10, 60, 40, 80, 0.5),          # IoU exactly 0.5 with the first dog: FP
    det(2, CAT, 0, 0, 30, 30, 0.5),            # TP, tied with the FP above across images
    det(2, DOG, 52, 52, 92, 92, 0.5),          # best IoU a difficult dog: ignored
    det(2, DOG, 10, 10, 40, 40, 0.5),          # TP, tied
    det(2, CAR, 4, 4, 20, 20, 0.3),            # car: difficult only -> no objects
    det(2, PERSON, 1, 1, 9, 9, 0.2),           # person: no objects at all
    det(3, DOG, 30, 30, 70, 70, 0.5),          # TP, tied
    det(3, CAT, 0, 0, 20, 20, 0.5),            # FP, tied
    det(3, CAT, 70, 70, 100, 100, 0.125),      # TP, low score
    det(4, DOG, 5, 5, 25, 25, 0.5),            # FP on an image without objects, tied
] + [det(4, DOG, 30 + i, 30, 50 + i, 50, 0.5) for i in range(14)]  # 14 more tied FPs: > 16 dogs


def write_voc(root: Path) -> Path:
    for folder in ("Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, objects in IMAGES.items():
        xml = ["<annotation>", "<size><width>120</width><height>120</height><depth>3</depth></size>"]
        for cls, box, hard in objects:
            corners = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
            xml.append(f"<object><name>{cls}</name><pose>Left</pose><truncated>0</truncated>"
                       f"<difficult>{hard}</difficult><bndbox>{corners}</bndbox></object>")
        (root / "Annotations" / f"{name}.xml").write_text("".join(xml) + "</annotation>\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{n}\n" for n in IMAGES))
    return root


ORDERS = {"model order": RESULTS,  # images reversed: tied detections come in another order
          "images reversed": sorted(RESULTS, key=lambda r: -r["image_id"])}


@pytest.fixture(scope="module", params=list(ORDERS))
def scored(request, tmp_path_factory):
    root = write_voc(tmp_path_factory.mktemp("voc") / "VOC2007")
    out = root.parent / "eval"
    out.mkdir()
    gt_path = root.parent / "gt.json"
    write_json(gt_path, voc_to_coco(root, "test"))
    results = ORDERS[request.param]
    flat = Scorer(gt_path, {}, "detection", voc=True).score(results, out)
    metrics = json.loads((out / "metrics.json").read_text())
    return root, results, flat, metrics


def test_per_class_ap_equals_classic_voc_eval(scored):
    root, results, flat, metrics = scored
    names = {i: n for i, n in enumerate(IMAGES, 1)}
    per_class = metrics["voc"]["per_class"]
    annopath = str(root / "Annotations" / "{}.xml")
    expected07, expected_area = {}, {}
    for cls, cat in (("cat", CAT), ("dog", DOG)):
        lines = detectron2_lines(results, names, cat)
        for use07, expected in ((True, expected07), (False, expected_area)):
            _, _, ap = classic_voc_eval(lines, annopath, list(IMAGES), cls, use_07_metric=use07)
            expected[cls] = float(ap)
        assert per_class[cls]["voc07_AP50"] == pytest.approx(expected07[cls], abs=1e-12), cls
        assert per_class[cls]["voc_area_AP50"] == pytest.approx(expected_area[cls], abs=1e-12), cls
    # the figures are not trivial: ties, difficult objects and duplicates all moved them
    assert 0 < expected07["dog"] < 1 and 0 < expected_area["cat"] < 1
    assert per_class["cat"]["objects"] == 3 and per_class["cat"]["difficult"] == 1
    assert per_class["dog"]["objects"] == 4 and per_class["dog"]["detections"] == 21
    # difficult-only and empty classes: no AP, left out of the mean (the classic divides by 0)
    assert per_class["car"]["voc07_AP50"] == -1 and per_class["car"]["difficult"] == 1
    assert per_class["person"]["voc_area_AP50"] == -1
    assert metrics["voc"]["voc07_mAP50"] == pytest.approx(np.mean(list(expected07.values())))
    assert metrics["voc"]["voc_area_mAP50"] == pytest.approx(np.mean(list(expected_area.values())))
    assert flat["voc07_mAP50"] == metrics["voc"]["voc07_mAP50"]
    assert flat["voc_area_mAP50"] == metrics["voc"]["voc_area_mAP50"]
    assert flat["voc_per_class"]["dog"]["voc07_AP50"] == per_class["dog"]["voc07_AP50"]
    assert "bbox_mAP" in flat and "bbox" in metrics  # COCO-style AP beside it


def test_bridge_carries_the_difficult_flag(scored):
    root = scored[0]
    anns = voc_to_coco(root, "test")["annotations"]
    assert [a["difficult"] for a in anns] == [o[2] for objs in IMAGES.values() for o in objs]
