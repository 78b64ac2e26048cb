"""COCO reader, targets, flip transform and loaders, checked against pycocotools and torch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from compress.data.coco import CocoDetection, load_coco_json
from compress.data.loaders import build_dataset, make_loader
from compress.data.synth import write_synthetic
from compress.data.transforms import RandomHorizontalFlip, flip_target
from compress.core.errors import DataError

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]  # torchvision references
LEFT_WRIST, RIGHT_WRIST = 9, 10


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_synthetic(root / "seg", "segmentation", 8, seed=1, image_size=80, split="val")
    write_synthetic(root / "kp", "keypoints", 8, seed=2, image_size=80, split="val")
    return root


def test_segmentation_targets_match_pycocotools(synth_root: Path) -> None:
    torch.manual_seed(0)
    ds = build_dataset("synthetic", synth_root / "seg", "val", "segmentation", train=False)
    reference = COCO(str(synth_root / "seg/annotations/instances_val.json"))
    assert ds.num_classes == 4 and ds.label_to_cat_id == {1: 1, 2: 2, 3: 3}
    for index in range(len(ds)):
        image, target = ds[index]
        info = reference.imgs[target["image_id"]]
        pixels = np.array(Image.open(synth_root / "seg/val" / info["file_name"]))
        assert image.dtype == torch.float32 and image.shape == (3, 80, 80)
        assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
        anns = reference.loadAnns(reference.getAnnIds(imgIds=[target["image_id"]]))
        expected = np.stack([reference.annToMask(a) for a in anns])
        assert target["masks"].dtype == torch.uint8
        assert torch.equal(target["masks"], torch.from_numpy(expected))
        labels = [ds.label_to_cat_id[int(v)] for v in target["labels"]]
        assert labels == [a["category_id"] for a in anns]
        for box, mask in zip(target["boxes"], target["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert target["area"].tolist() == [float(a["area"]) for a in anns]


def test_keypoint_targets_and_flip(synth_root: Path) -> None:
    ds = build_dataset("synthetic", synth_root / "kp", "val", "keypoints", train=False)
    assert ds.keypoint_flip_perm == COCO_FLIP and ds.num_classes == 2
    raw = json.loads((synth_root / "kp/annotations/person_keypoints_val.json").read_text())
    image, target = ds[0]
    anns = [a for a in raw["annotations"] if a["image_id"] == target["image_id"]]
    expected = torch.tensor([a["keypoints"] for a in anns]).reshape(-1, 17, 3)
    assert target["keypoints"].dtype == torch.float32
    assert torch.equal(target["keypoints"], expected)
    flip = RandomHorizontalFlip(prob=1.0, keypoint_flip_perm=ds.keypoint_flip_perm)
    flipped_image, flipped = flip(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    before = target["keypoints"]
    after = flipped["keypoints"]
    assert torch.equal(after[:, RIGHT_WRIST, 0], 80 - before[:, LEFT_WRIST, 0])
    assert torch.equal(after[:, RIGHT_WRIST, 1:], before[:, LEFT_WRIST, 1:])
    assert torch.equal(after[:, LEFT_WRIST, 0], 80 - before[:, RIGHT_WRIST, 0])
    assert torch.equal(flip_target(flipped, 80, COCO_FLIP)["keypoints"], before)


def test_flip_moves_boxes_with_masks() -> None:
    masks = torch.zeros((2, 10, 12), dtype=torch.uint8)
    masks[0, 2:5, 1:4] = 1
    masks[1, 0:10, 7:12] = 1
    target = {"boxes": torch.tensor([[1.0, 2, 4, 5], [7, 0, 12, 10]]), "masks": masks,
              "keypoints": torch.tensor([[[3.0, 4, 2], [5, 5, 0]]])}
    flipped = flip_target(target, 12, [1, 0])
    for box, mask in zip(flipped["boxes"], flipped["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert flipped["keypoints"].tolist() == [[[0.0, 0, 0], [9, 4, 2]]]  # v=0 zeroed
    with pytest.raises(ValueError):
        flip_target({"keypoints": target["keypoints"]}, 12, None)


def _write_coco(root: Path, annotations: list[dict], images: int = 2) -> Path:
    (root / "img").mkdir(parents=True)
    for image_id in range(1, images + 1):
        Image.new("RGB", (20, 10), (9, 9, 9)).save(root / "img" / f"{image_id}.png")
    data = {"images": [{"id": i, "file_name": f"{i}.png", "width": 20, "height": 10}
                       for i in range(1, images + 1)],
            "annotations": annotations,
            "categories": [{"id": 7, "name": "a"}, {"id": 3, "name": "b"}]}
    (root / "gt.json").write_text(json.dumps(data))
    return root / "gt.json"


def test_crowd_degenerate_and_empty_images(tmp_path: Path) -> None:
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0,
         "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]], "area": 25},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [8, 2, 6, 4], "iscrowd": 1,
         "segmentation": [[8, 2, 14, 2, 14, 6, 8, 6]], "area": 24},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [2, 2, 0.5, 4], "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [15, 3, 30, 30], "iscrowd": 0},
    ]
    gt = _write_coco(tmp_path, anns)
    train = CocoDetection(tmp_path / "img", gt, "detection", train=True)
    _, target = train[0]
    assert target["boxes"].tolist() == [[1, 1, 6, 6], [15, 3, 20, 10]]  # clipped to 20x10
    assert target["labels"].tolist() == [2, 1]  # category 7 -> label 2, 3 -> 1 (sorted ids)
    assert train.label_to_cat_id == {1: 3, 2: 7}
    evaluation = CocoDetection(tmp_path / "img", gt, "detection", train=False)
    assert evaluation[0][1]["iscrowd"].tolist() == [0, 1, 0]
    _, empty = train[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert evaluation.coco.anns[3]["area"] == 2.0  # filled in from the box for COCOeval


@pytest.mark.parametrize("text, fragment", [
    ("[1, 2]", "top level is a JSON list"),
    ('{"images": [], "categories": []}', "missing 'annotations'"),
    ('{"images": [], "annotations": {}, "categories": []}', "annotations: is dict"),
    ('{"images": [{"id": 1, "width": 2, "height": 2}], "annotations": [], "categories": []}',
     "images[0]: missing 'file_name'"),
    ('{"images": [], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1]}],'
     ' "categories": []}', "annotations[0].bbox"),
    ('{"images": [], "annotations": [{"id": 1, "image_id": 5, "category_id": 1,'
     ' "bbox": [1, 1, 1, 1]}], "categories": [{"id": 1, "name": "x"}]}', "image_id 5"),
    ('{"images": [\n  {"id": 1,,}]}', "invalid JSON at line 2 column 12"),
])
def test_not_coco_raises_one_line_data_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_coco_json(path)
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "a/../../b.png", "C:\\x.png"])
def test_escaping_file_names_are_rejected(tmp_path: Path, name: str) -> None:
    gt = _write_coco(tmp_path, [])
    data = json.loads(gt.read_text())
    data["images"][0]["file_name"] = name
    gt.write_text(json.dumps(data))
    with pytest.raises(DataError, match="leaves the image folder"):
        CocoDetection(tmp_path / "img", gt, "detection", train=False)


def test_missing_root_and_files(tmp_path: Path) -> None:
    for kind in ("coco", "voc", "synthetic"):
        with pytest.raises(DataError) as info:
            build_dataset(kind, tmp_path / "nope", "val2017", "detection", train=False)
        assert "data.root" in str(info.value) and "--smoke" in str(info.value)
    with pytest.raises(DataError, match="person_keypoints_val2017.json"):
        build_dataset("coco", tmp_path, "val2017", "keypoints", train=False)
    with pytest.raises(DataError, match="expected one of coco, voc, synthetic"):
        build_dataset("imagenet", tmp_path, "val", "detection", train=False)


def test_loader_is_seeded(synth_root: Path) -> None:
    ds = build_dataset("synthetic", synth_root / "seg", "val", "segmentation", train=False)
    orders = []
    for seed in (3, 3, 4):
        loader = make_loader(ds, batch_size=3, shuffle=True, seed=seed, num_workers=0)
        orders.append([t["image_id"] for _, targets in loader for t in targets])
    assert orders[0] == orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(ds.ids)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and len(images) == len(targets) == 3
