"""COCO-format annotation files: validation and a torch Dataset for the torchvision detectors.

Targets follow the project convention: boxes (xyxy float32), labels (int64, contiguous 1..K),
image_id (int), area (float32), iscrowd (int64), masks (uint8 NxHxW, segmentation task),
keypoints (float32 NxKx3, keypoints task). Training targets drop crowd regions and degenerate
boxes (width or height < 1 pixel after clipping); evaluation targets keep crowd regions with
iscrowd=1. Images without annotations are kept (boxes of shape (0, 4)).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from compress.core.coco_person import flip_permutation
from compress.core.errors import DataError
from compress.data.transforms import default_transforms

log = logging.getLogger(__name__)

TASKS = ("detection", "segmentation", "keypoints")
_REQUIRED = {
    "images": {"id": int, "file_name": str, "width": int, "height": int},
    "annotations": {"id": int, "image_id": int, "category_id": int, "bbox": list},
    "categories": {"id": int, "name": str},
}
_EXPECTED = "a COCO JSON object with 'images', 'annotations' and 'categories' lists"

Transform = Callable[[Any, dict], tuple[torch.Tensor, dict]]


def _check_records(path: str, section: str, records: list) -> None:
    fields = _REQUIRED[section]
    for index, record in enumerate(records):
        where = f"{section}[{index}]"
        if not isinstance(record, dict):
            raise DataError(f"is {type(record).__name__}; expected an object", file=path, key=where)
        for name, kind in fields.items():
            value = record.get(name)
            if value is None:
                raise DataError(f"missing '{name}'; each of '{section}' needs "
                                f"{', '.join(fields)}", file=path, key=where)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DataError(f"{value!r:.60} is {type(value).__name__}; expected "
                                f"{kind.__name__}", file=path, key=f"{where}.{name}")
        if section == "annotations":
            bbox = record["bbox"]
            if len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
                raise DataError(f"{bbox!r:.60} is not [x, y, width, height]; expected 4 numbers",
                                file=path, key=f"{where}.bbox")


def _check_links(path: str, data: dict) -> None:
    image_ids = [image["id"] for image in data["images"]]
    if len(set(image_ids)) != len(image_ids):
        raise DataError("duplicate image ids; expected each image id once", file=path, key="images")
    image_set = set(image_ids)
    cat_ids = {cat["id"] for cat in data["categories"]}
    for index, ann in enumerate(data["annotations"]):
        if ann["image_id"] not in image_set:
            raise DataError(f"image_id {ann['image_id']} is not in 'images'; expected an "
                            "existing image id", file=path, key=f"annotations[{index}].image_id")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"category_id {ann['category_id']} is not in 'categories'; expected "
                            f"one of {sorted(cat_ids)[:20]}", file=path,
                            key=f"annotations[{index}].category_id")


def load_coco_json(path: str | Path) -> dict:
    """Read and validate a COCO annotation file; raises DataError naming what is wrong."""
    path_str = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DataError(f"does not exist; expected {_EXPECTED}", file=path_str) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot be read ({err}); expected {_EXPECTED}", file=path_str) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}; "
                        f"expected {_EXPECTED}", file=path_str) from err
    if not isinstance(data, dict):
        raise DataError(f"top level is a JSON {type(data).__name__}; expected {_EXPECTED}",
                        file=path_str)
    for section in _REQUIRED:
        if section not in data:
            raise DataError(f"missing '{section}'; expected {_EXPECTED}", file=path_str)
        if not isinstance(data[section], list):
            raise DataError(f"is {type(data[section]).__name__}; expected a list",
                            file=path_str, key=section)
        _check_records(path_str, section, data[section])
    _check_links(path_str, data)
    return data


def _fill_defaults(data: dict) -> None:
    """Give every annotation `area` and `iscrowd` (COCOeval reads both)."""
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])


def coco_from_dict(data: dict) -> COCO:
    """A pycocotools COCO object over an in-memory dataset dict (its index prints silenced)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_file_name(file_name: str, source: str, key: str) -> None:
    """Reject image paths that would leave the image folder (absolute, drive, or `..`)."""
    posix, windows = PurePosixPath(file_name), PureWindowsPath(file_name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
        raise DataError(f"file_name {file_name!r} leaves the image folder; expected a path "
                        "relative to it without '..'", file=source, key=key)


def _num_labelled(ann: dict) -> int:
    if "num_keypoints" in ann:
        return int(ann["num_keypoints"])
    return sum(1 for v in ann.get("keypoints", [])[2::3] if v > 0)


def _xyxy(bbox: list[float], width: int, height: int) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)]


MAX_IMAGE_PIXELS = 100_000_000  # 10k x 10k; COCO images are ~640 x 480


class CocoDetection(Dataset):
    """A COCO-format dataset yielding (image CxHxW float in [0, 1], target dict).

    `task` picks the target fields (masks for "segmentation", keypoints for "keypoints"; the
    keypoints task keeps only categories with keypoint names, i.e. persons). With `train=True`
    crowd annotations, and for keypoints persons with fewer than `min_keypoints` labelled
    keypoints, are left out of the targets. `coco` (pycocotools, area/iscrowd filled in) and
    `gt_path` serve the evaluator; predictions map back with `label_to_cat_id`.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, task: str, train: bool,
                 min_keypoints: int = 1, transforms: Transform | None = None):
        self.gt_path: Path | None = Path(ann_file)
        data = load_coco_json(ann_file)
        self._setup(image_dir, data, str(ann_file), task, train, min_keypoints, transforms)

    def _setup(self, image_dir: str | Path, data: dict, source: str, task: str, train: bool,
               min_keypoints: int, transforms: Transform | None) -> None:
        if task not in TASKS:
            raise DataError(f"task '{task}' is unknown; expected one of {', '.join(TASKS)}")
        self.image_dir, self.source = Path(image_dir), source
        self.task, self.train, self.min_keypoints = task, train, min_keypoints
        _fill_defaults(data)
        for index, image in enumerate(data["images"]):
            check_file_name(image["file_name"], source, f"images[{index}].file_name")
        self.coco = coco_from_dict(data)
        self.ids = [image["id"] for image in data["images"]]
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.keypoint_names: list[str] = []
        self.keypoint_flip_perm: list[int] | None = None
        if task == "keypoints":
            categories = self._keypoint_categories(categories)
        self.cat_id_to_label = {cat["id"]: label for label, cat in enumerate(categories, 1)}
        self.label_to_cat_id = {label: cat_id for cat_id, label in self.cat_id_to_label.items()}
        self.class_names = ["__background__"] + [cat["name"] for cat in categories]
        self.num_classes = len(categories) + 1
        self.transforms = transforms or default_transforms(train, self.keypoint_flip_perm)

    def _keypoint_categories(self, categories: list[dict]) -> list[dict]:
        people = [cat for cat in categories if cat.get("keypoints")]
        if not people:
            raise DataError("no category has a 'keypoints' list; expected a person_keypoints "
                            "file (category 'person' with keypoint names)", file=self.source)
        self.keypoint_names = list(people[0]["keypoints"])
        self.keypoint_flip_perm = flip_permutation(self.keypoint_names)
        return people

    def __len__(self) -> int:
        return len(self.ids)

    def get_height_and_width(self, index: int) -> tuple[int, int]:
        info = self.coco.imgs[self.ids[index]]
        return int(info["height"]), int(info["width"])

    def _load_image(self, info: dict) -> Image.Image:
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as raw:  # reads the header only
                if raw.width * raw.height > MAX_IMAGE_PIXELS:
                    raise DataError(f"image {info['file_name']!r} is {raw.width}x{raw.height}: more "
                                    f"than {MAX_IMAGE_PIXELS:,} pixels is refused (a decompression "
                                    "bomb or a wrong file)", file=self.source)
                image = raw.convert("RGB")
        except (FileNotFoundError, OSError, Image.DecompressionBombError) as err:
            raise DataError(f"image {info['file_name']!r} of image id {info['id']} cannot be "
                            f"read from {self.image_dir} ({err.__class__.__name__})",
                            file=self.source) from err
        if image.size != (info["width"], info["height"]):
            raise DataError(f"image {path} is {image.width}x{image.height} but the annotations "
                            f"say {info['width']}x{info['height']}; expected them to match",
                            file=self.source)
        return image

    def _keep(self, ann: dict) -> bool:
        if ann["category_id"] not in self.cat_id_to_label:
            return False
        if self.train and ann.get("iscrowd", 0):
            return False
        return not (self.train and self.task == "keypoints"
                    and _num_labelled(ann) < self.min_keypoints)

    def _target(self, image_id: int, width: int, height: int) -> dict:
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if self._keep(a)]
        boxes = torch.tensor([_xyxy(a["bbox"], width, height) for a in anns],
                             dtype=torch.float32).reshape(-1, 4)
        valid = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        anns = [a for a, ok in zip(anns, valid.tolist()) if ok]
        target = {
            "boxes": boxes[valid],
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns],
                                   dtype=torch.int64),
            "image_id": int(image_id),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
        }
        if self.task == "segmentation":
            masks = [self._mask(a) for a in anns]
            target["masks"] = (torch.from_numpy(np.stack(masks)) if masks
                               else torch.zeros((0, height, width), dtype=torch.uint8))
        if self.task == "keypoints":
            count = len(self.keypoint_names)
            points = [self._keypoints(a, count) for a in anns]
            target["keypoints"] = torch.tensor(points, dtype=torch.float32).reshape(-1, count, 3)
        return target

    def _mask(self, ann: dict) -> np.ndarray:
        if not ann.get("segmentation"):
            raise DataError(f"annotation {ann['id']} has no 'segmentation'; the segmentation "
                            "task expects polygons or RLE on every annotation",
                            file=self.source)
        return self.coco.annToMask(ann)

    def _keypoints(self, ann: dict, count: int) -> list[float]:
        points = ann.get("keypoints") or [0.0] * (3 * count)
        if len(points) != 3 * count:
            raise DataError(f"annotation {ann['id']} has {len(points)} keypoint values; expected "
                            f"{3 * count} (x, y, v for each of {count} keypoints)",
                            file=self.source)
        return points

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        info = self.coco.imgs[self.ids[index]]
        image = self._load_image(info)
        target = self._target(info["id"], image.width, image.height)
        return self.transforms(image, target)
