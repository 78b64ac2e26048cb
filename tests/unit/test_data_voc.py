"""VOC reader and VOC-to-COCO bridge on a tiny generated VOC folder."""
from __future__ import annotations

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from compress.data.loaders import build_dataset
from compress.data.transforms import Compose, ToTensor
from compress.data.voc import VOCDetection, voc_to_coco, write_tiny_voc
from compress.core.errors import DataError

# The standard Pascal VOC class order (devkit VOCinit.m).
VOC_ORDER = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_voc(tmp_path_factory.mktemp("voc") / "VOC2012", images=10, seed=3)


def _xml_objects(root: Path, name: str) -> list[tuple[str, list[float], int]]:
    tree = ET.parse(root / "Annotations" / f"{name}.xml")
    return [(o.findtext("name"), [float(o.find("bndbox").findtext(t))
                                  for t in ("xmin", "ymin", "xmax", "ymax")],
             int(o.findtext("difficult"))) for o in tree.iter("object")]


def test_bridge_boxes_categories_and_difficult(voc_root: Path) -> None:
    gt = voc_to_coco(voc_root, "trainval")
    assert [c["name"] for c in gt["categories"]] == VOC_ORDER
    assert [c["id"] for c in gt["categories"]] == list(range(1, 21))
    names = (voc_root / "ImageSets/Main/trainval.txt").read_text().split()
    assert [i["voc_id"] for i in gt["images"]] == names
    expected = []
    for image_id, name in enumerate(names, 1):
        for cls, (x1, y1, x2, y2), difficult in _xml_objects(voc_root, name):
            w, h = x2 - x1 + 1, y2 - y1 + 1
            expected.append((image_id, VOC_ORDER.index(cls) + 1, [x1 - 1, y1 - 1, w, h], w * h,
                             difficult))
    got = [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])
           for a in gt["annotations"]]
    assert got == expected
    for ann in gt["annotations"]:  # box polygon, so tidecv (which needs the key) can read it
        x, y, w, h = ann["bbox"]
        assert ann["segmentation"] == [[x, y, x + w, y, x + w, y + h, x, y + h]]
    assert 0 < sum(e[4] for e in expected) < len(expected)  # both kinds are present


def test_bridge_is_coco_and_difficult_is_ignored(voc_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(voc_to_coco(voc_root, "val")))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        plain = [a for a in coco.anns.values() if not a["iscrowd"]]
        detections = [{"image_id": a["image_id"], "category_id": a["category_id"],
                       "bbox": a["bbox"], "score": 1.0} for a in plain]
        evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # Every non-difficult object found and nothing else: AP 1 although difficult ones are missed.
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_dataset_targets(voc_root: Path) -> None:
    gt = voc_to_coco(voc_root, "train")
    evaluation = VOCDetection(voc_root, "train", train=False)
    training = VOCDetection(voc_root, "train", train=True, transforms=Compose([ToTensor()]))
    assert isinstance(build_dataset("voc", voc_root, "train", "detection", train=True),
                      VOCDetection)
    assert evaluation.num_classes == 21 and evaluation.label_to_cat_id[15] == 15
    assert evaluation.class_names[1:] == VOC_ORDER and evaluation.gt_path is None
    for index, info in enumerate(gt["images"]):
        anns = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
        image, target = evaluation[index]
        assert image.shape == (3, info["height"], info["width"])
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        assert target["boxes"].tolist() == boxes
        assert target["labels"].tolist() == [a["category_id"] for a in anns]
        assert target["difficult"].tolist() == [bool(a["iscrowd"]) for a in anns]
        train_target = training[index][1]
        kept = [b for b, a in zip(boxes, anns) if not a["iscrowd"]]
        assert train_target["boxes"].tolist() == kept  # difficult left out of training
        assert "difficult" in train_target and not train_target["difficult"].any()


def test_box_matches_drawn_pixels(voc_root: Path) -> None:
    """The tiny writer's rectangles fill exactly the bridged continuous boxes (one-object images)."""
    gt = voc_to_coco(voc_root, "trainval")
    dataset = VOCDetection(voc_root, "trainval", train=False)
    checked = 0
    for index, info in enumerate(gt["images"]):
        anns = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
        if len(anns) != 1:
            continue
        image = dataset[index][0].numpy()
        x, y, w, h = (int(v) for v in anns[0]["bbox"])
        inside = image[:, y + 2:y + h - 2, x + 2:x + w - 2].reshape(3, -1).std(axis=1)
        assert np.all(inside < 0.05)  # flat colour (JPEG noise only) inside the box
        checked += 1
    assert checked >= 1


def test_bad_voc_input(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split file does not exist"):
        voc_to_coco(voc_root, "test")
    broken = write_tiny_voc(tmp_path / "broken", images=2, seed=0)
    xml = broken / "Annotations" / "2012_000001.xml"
    xml.write_text(xml.read_text().replace("</annotation>", ""))
    with pytest.raises(DataError, match="invalid XML at line"):
        voc_to_coco(broken, "trainval")
    xml.write_text("<annotation><size><width>9</width><height>9</height></size>"
                   "<object><name>unicorn</name></object></annotation>")
    with pytest.raises(DataError, match="'unicorn' is not a VOC class"):
        voc_to_coco(broken, "trainval")
    with pytest.raises(DataError, match="expected 'detection'"):
        build_dataset("voc", voc_root, "train", "segmentation", train=False)
