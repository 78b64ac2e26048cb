"""Build datasets by kind (coco | voc | synthetic) and seeded data loaders for them.

Layouts under `root`:
- coco: `annotations/instances_<split>.json` (`person_keypoints_<split>.json` for keypoints)
  and images in `<split>/` (e.g. split `val2017`).
- voc: `Annotations/`, `ImageSets/Main/<split>.txt`, `JPEGImages/` (root = VOCdevkit/VOC2012).
- synthetic: the coco layout, as `compress data synth` writes it (compress/data/synth.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from compress.data.coco import CocoDetection, Transform
from compress.data.voc import VOC_LAYOUT, VOCDetection
from compress.core.errors import DataError

log = logging.getLogger(__name__)

KINDS = ("coco", "voc", "synthetic")
_SMOKE_HINT = "`compress run RECIPE --smoke` runs offline on generated data"


def expected_layout(kind: str, split: str, task: str) -> str:
    """A one-line description of where `kind` data is expected under its root."""
    if kind == "voc":
        return VOC_LAYOUT.replace("<split>", split)
    layout = f"{annotation_file(kind, '', split, task).as_posix()} and images in {split}/"
    return layout if kind == "coco" else f"{layout} (written by `compress data synth`)"


def annotation_file(kind: str, root: str | Path, split: str, task: str) -> Path:
    """Where the COCO-format annotation file of a coco or synthetic split lives (one layout)."""
    prefix = "person_keypoints" if task == "keypoints" else "instances"
    return Path(root) / "annotations" / f"{prefix}_{split}.json"


def build_dataset(kind: str, root: str | Path, split: str, task: str, train: bool,
                  transforms: Transform | None = None, min_keypoints: int = 1) -> Dataset:
    """The dataset of one split; raises DataError when the data is not where it should be."""
    if kind not in KINDS:
        raise DataError(f"data.dataset '{kind}' is unknown; expected one of {', '.join(KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: '{root}' does not exist; expected "
                        f"{expected_layout(kind, split, task)}; {_SMOKE_HINT}")
    if kind == "voc":
        if task != "detection":
            raise DataError(f"task '{task}' is not available on VOC; expected 'detection'")
        return VOCDetection(root, split, train, transforms=transforms)
    ann_file = annotation_file(kind, root, split, task)
    if not ann_file.is_file():
        raise DataError(f"data.root: '{root}' has no {ann_file.relative_to(root)}; expected "
                        f"{expected_layout(kind, split, task)}; {_SMOKE_HINT}")
    return CocoDetection(root / split, ann_file, task, train, min_keypoints=min_keypoints,
                         transforms=transforms)


def collate_fn(batch: list[tuple[Any, dict]]) -> tuple[list[Any], list[dict]]:
    """Keep images and targets as lists (the detectors take lists of differently sized images)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                distributed: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader with a seeded generator (same seed, same order and worker seeds).

    With `distributed=True` a DistributedSampler (seeded the same way) shards the data; call
    `loader.sampler.set_epoch(epoch)` each epoch to reshuffle.
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
        num_workers=num_workers, collate_fn=collate_fn, generator=generator,
        drop_last=drop_last, persistent_workers=num_workers > 0,
    )
