"""Pascal VOC detection: reader, bridge to COCO-format ground truth, and a tiny folder writer.

Layout: `root/Annotations/<id>.xml`, `root/ImageSets/Main/<split>.txt`, `root/JPEGImages/<id>.jpg`
(e.g. root = VOCdevkit/VOC2012). Categories are the 20 VOC classes in the standard order, ids
1..20. Image ids are 1-based positions in the split file, in file order.

Boxes: VOC corners are 1-based inclusive pixel indices; like detectron2 they become continuous
coordinates x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax (COCO bbox
[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]).

Difficult objects: the bridge writes them with iscrowd=1, so COCO evaluation ignores them (the
usual VOC-to-COCO bridge, as VOC's own metric ignores them), and with `difficult: 1`, the flag the
VOC metric (evaluate/metrics/voc.py) reads. The dataset therefore drops them from
training targets (py-faster-rcnn's default) and keeps them in evaluation targets with
iscrowd=1 and `difficult=True`.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from compress.core.atomic import write_text
from compress.data.coco import CocoDetection, Transform
from compress.core.errors import DataError

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC_LAYOUT = "Annotations/<id>.xml, ImageSets/Main/<split>.txt and JPEGImages/<id>.jpg"


def read_split(root: str | Path, split: str) -> list[str]:
    """The image ids listed in `root/ImageSets/Main/<split>.txt`."""
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"split file does not exist; expected a VOC folder with {VOC_LAYOUT}",
                        file=str(path))
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _number(node: ET.Element, tag: str, path: Path) -> float:
    text = node.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError) as err:
        raise DataError(f"<{tag}> is {text!r}; expected a number", file=str(path)) from err


def parse_voc_xml(path: Path) -> dict:
    """One annotation file -> {width, height, objects: [{name, box (1-based), difficult}]}."""
    try:
        tree = ET.parse(path)
    except FileNotFoundError as err:
        raise DataError(f"annotation file does not exist; expected {VOC_LAYOUT}",
                        file=str(path)) from err
    except ET.ParseError as err:
        line, column = err.position
        raise DataError(f"invalid XML at line {line} column {column}; expected a VOC annotation",
                        file=str(path)) from err
    size = tree.getroot().find("size")
    if size is None:
        raise DataError("missing <size>; expected <size><width>..<height>..</size>",
                        file=str(path))
    objects = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataError(f"object name {name!r} is not a VOC class; expected one of "
                            f"{', '.join(VOC_CLASSES)}", file=str(path))
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"object {name!r} has no <bndbox>", file=str(path))
        corners = [_number(box, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")]
        difficult = int(_number(obj, "difficult", path)) if obj.find("difficult") is not None else 0
        objects.append({"name": name, "box": corners, "difficult": difficult})
    return {"width": int(_number(size, "width", path)), "height": int(_number(size, "height", path)),
            "objects": objects}


def voc_to_coco(root: str | Path, split: str) -> dict:
    """COCO-format ground truth for a VOC split (difficult objects -> iscrowd=1, ignored).

    Each annotation also gets its box as a polygon `segmentation` (tidecv needs the key).
    """
    root = Path(root)
    images, annotations = [], []
    for image_id, name in enumerate(read_split(root, split), 1):
        record = parse_voc_xml(root / "Annotations" / f"{name}.xml")
        images.append({"id": image_id, "file_name": f"{name}.jpg", "voc_id": name,
                       "width": record["width"], "height": record["height"]})
        for obj in record["objects"]:
            xmin, ymin, xmax, ymax = obj["box"]
            width, height = xmax - xmin + 1, ymax - ymin + 1
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": VOC_CLASSES.index(obj["name"]) + 1,
                "bbox": [xmin - 1, ymin - 1, width, height], "area": width * height,
                "iscrowd": int(obj["difficult"]), "ignore": int(obj["difficult"]),
                "difficult": int(obj["difficult"]),
                "segmentation": [[xmin - 1, ymin - 1, xmax, ymin - 1, xmax, ymax, xmin - 1, ymax]],
            })
    categories = [{"id": i, "name": name, "supercategory": "voc"}
                  for i, name in enumerate(VOC_CLASSES, 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


class VOCDetection(CocoDetection):
    """A VOC split as a detection dataset with the same targets as `CocoDetection`.

    Evaluation targets carry `difficult` (bool) besides iscrowd; `coco` holds the bridged ground
    truth (`voc_to_coco`) for the COCO evaluator; `gt_path` is None (no file on disk).
    """

    def __init__(self, root: str | Path, split: str, train: bool,
                 transforms: Transform | None = None):
        root = Path(root)
        self.gt_path = None
        data = voc_to_coco(root, split)
        source = str(root / "ImageSets" / "Main" / f"{split}.txt")
        self._setup(root / "JPEGImages", data, source, "detection", train, 0, transforms)

    def _target(self, image_id: int, width: int, height: int) -> dict:
        target = super()._target(image_id, width, height)
        target["difficult"] = target["iscrowd"].bool()
        return target


def _tiny_voc_xml(name: str, size: int, objects: list[dict]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    size_node = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_node, tag).text = str(value)
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(obj["difficult"])
        box = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"]):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _tiny_voc_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[dict]]:
    image = Image.fromarray(rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    objects = []
    for index in range(int(rng.integers(1, 4))):
        class_index = int(rng.integers(0, len(VOC_CLASSES)))
        w, h = (int(v) for v in rng.integers(size // 5, size // 2, size=2))
        xmin, ymin = (int(v) for v in rng.integers(1, size - max(w, h), size=2))
        box = [xmin, ymin, xmin + w - 1, ymin + h - 1]  # 1-based inclusive corners
        colour = tuple(int(c) for c in (np.array([37, 91, 173]) * (class_index + 1)) % 256)
        draw.rectangle([box[0] - 1, box[1] - 1, box[2] - 1, box[3] - 1], fill=colour)
        objects.append({"name": VOC_CLASSES[class_index], "box": box,
                        "difficult": int(index == 2 or rng.random() < 0.15)})
    return image, objects


def write_tiny_voc(root: str | Path, images: int, seed: int = 0, image_size: int = 96) -> Path:
    """Write a small VOC-layout folder of coloured rectangles (some objects difficult).

    Splits: `train` (first half), `val` (rest) and `trainval` (all). Returns `root`.
    """
    root = Path(root)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"2012_{index:06d}" for index in range(1, images + 1)]
    for name in names:
        image, objects = _tiny_voc_image(rng, image_size)
        image.save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        write_text(root / "Annotations" / f"{name}.xml", _tiny_voc_xml(name, image_size, objects))
    half = (images + 1) // 2
    for split, members in (("train", names[:half]), ("val", names[half:]), ("trainval", names)):
        write_text(root / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{n}\n" for n in members))
    return root
