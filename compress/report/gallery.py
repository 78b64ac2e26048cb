"""The report's gallery: the first validation images of a run predicted by each of its models
(dense, ticket) side by side; and how a run's labels read back (`run_label_info`), which
`compress predict` shares.

The images are the run's own validation set, read as its data loader reads them (RGB, [0, 1]);
the models are its checkpoints on torch.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from compress.core.atomic import write_bytes
from compress.core.errors import DataError
from compress.data.loaders import build_dataset
from compress.models.build import ARCH_TASK
from compress.recipe.load import load_resolved
from compress.report.drawing import draw_detections, side_by_side
from compress.report.page import Missing
from compress.run.loaded import load_model

log = logging.getLogger(__name__)

GALLERY_IMAGES = 3
GALLERY_SCORE_THRESHOLD = 0.3
GALLERY_MAX_SHOWN = 10
ROW_GAP_PX = 8


@dataclass
class LabelInfo:
    """How a run's labels read back: task, label -> COCO category id / name, GT file and images."""

    task: str
    label_to_cat_id: dict[int, int] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    gt_path: Path | None = None
    image_dir: Path | None = None
    image_ids: dict[str, int] = field(default_factory=dict)


def run_label_info(run_root: Path) -> LabelInfo:
    """Label mapping, GT file and validation image folder of a run folder (from its recipe)."""

    recipe = load_resolved(run_root / "recipe.yaml")
    task = ARCH_TASK[recipe.model.arch]
    kind = recipe.data.dataset
    root = Path(recipe.data.root) if recipe.data.root else run_root / "data"
    split = "val" if kind == "synthetic" else recipe.data.val_split
    try:
        dataset = build_dataset(kind, root, split, task, train=False)
    except DataError as err:
        log.warning("label names unavailable (%s); category id = label", err)
        return LabelInfo(task)
    names = dict(enumerate(getattr(dataset, "class_names", [])))
    names.pop(0, None)
    info = LabelInfo(task, dict(dataset.label_to_cat_id), names, image_dir=getattr(dataset, "image_dir", None))
    gt_path = getattr(dataset, "gt_path", None)
    if gt_path is not None and kind != "voc":
        info.gt_path = Path(gt_path)
        info.image_ids = {img["file_name"]: int(img["id"]) for img in dataset.coco.dataset["images"]}
    return info


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gallery_image(run_root: Path, models: list[tuple[str, Path]], out_png: Path,
                  n_images: int = GALLERY_IMAGES,
                  score_threshold: float = GALLERY_SCORE_THRESHOLD) -> tuple[Path, str]:
    """The first validation images of the run predicted by each (title, checkpoint) of `models`
    side by side, one row per image; written to `out_png`. Returns the path and a caption."""
    info = run_label_info(run_root)
    files = _gallery_files(info, n_images)
    for _, path in models:
        if not path.is_file():
            raise Missing(f"{path} is missing")
    predictors = [(title, _torch_model(path)) for title, path in models]
    rows = []
    for file in files:
        image = _read_rgb(file)
        drawn = [draw_detections(image, _predict(model, image),
                                 class_names=info.class_names or None,
                                 score_threshold=score_threshold, min_side_px=320,
                                 max_shown=GALLERY_MAX_SHOWN)
                 for _, model in predictors]
        rows.append(side_by_side(drawn, [f"{title}: {file.name}" for title, _ in predictors]))
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height + ROW_GAP_PX for r in rows)),
                      (255, 255, 255))
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + ROW_GAP_PX
    write_bytes(out_png, png_bytes(sheet))
    return out_png, (f"{len(files)} validation image(s); the best {GALLERY_MAX_SHOWN} detections "
                     f"scoring >= {score_threshold} by {' and '.join(t for t, _ in models)}")


def _gallery_files(info: LabelInfo, n_images: int) -> list[Path]:
    if info.image_dir is None or not info.image_ids:
        raise Missing("the run's validation images are not available")
    by_id = sorted(info.image_ids.items(), key=lambda item: item[1])
    files = [info.image_dir / name for name, _ in by_id if (info.image_dir / name).is_file()]
    if not files:
        raise Missing(f"no validation image found in {info.image_dir}")
    return files[:n_images]


def _torch_model(checkpoint: Path) -> torch.nn.Module:
    return load_model(checkpoint).model.eval()


def _predict(model: torch.nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model([image])[0]


def _read_rgb(path: Path) -> torch.Tensor:
    """A validation image as the run's data loader reads it: RGB, 3xHxW float in [0, 1]."""
    with Image.open(path) as raw:
        return to_tensor(raw.convert("RGB"))
