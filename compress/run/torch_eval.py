"""COCO (and Pascal VOC) metrics of a torch detector on the validation set (the round metric and
`eval/torch`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from compress.core.atomic import write_json
from compress.run.setup import IOU_PREFIX, TASK_IOU_TYPES
from evaluate.metrics.detections import outputs_to_coco_results
from evaluate.metrics.coco import coco_stats
from evaluate.metrics.voc import voc_ap
from compress.training.loop import predict
from compress.data.loaders import make_loader


def coco_results(predictions: Iterable[tuple[int, dict]], label_to_cat_id: dict[int, int],
                 task: str) -> list[dict]:
    results: list[dict] = []
    for image_id, outputs in predictions:
        results.extend(outputs_to_coco_results(image_id, outputs, label_to_cat_id, task))
    return results


def score_results(gt_path: Path, results: list[dict], task: str, out_dir: Path,
                  convention: str = "coco", voc: bool = False) -> dict[str, Any]:
    """Write results.json and metrics.json into out_dir; return the flat round metrics.

    `convention` is the recipe's evaluate.convention (see evaluate.metrics.coco). COCO-style AP
    per iou type; with `voc` (a Pascal VOC validation set) also the VOC metric (metrics.json
    `voc`: per-class and mean AP50, VOC07 11-point and area rule, difficult objects ignored;
    flat: voc07_mAP50, voc_area_mAP50 and voc_per_class).
    """

    full: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for iou_type in TASK_IOU_TYPES[task]:
        stats = coco_stats(gt_path, results, iou_type, convention=convention)
        full[iou_type] = stats
        prefix = IOU_PREFIX[iou_type]
        flat[f"{prefix}_mAP"] = stats["AP"]
        flat[f"{prefix}_AP50"] = stats["AP50"]
        flat[f"{prefix}_AP75"] = stats["AP75"]
    if voc:
        full["voc"] = voc_ap(gt_path, results)
        flat["voc07_mAP50"] = full["voc"]["voc07_mAP50"]
        flat["voc_area_mAP50"] = full["voc"]["voc_area_mAP50"]
        flat["voc_per_class"] = {name: {k: row[k] for k in ("voc07_AP50", "voc_area_AP50")}
                                 for name, row in full["voc"]["per_class"].items()}
    write_json(out_dir / "results.json", results, indent=None)
    write_json(out_dir / "metrics.json", full)
    return flat


def evaluate_torch(model: nn.Module, loader: Any, device: torch.device, gt_path: Path,
                   label_to_cat_id: dict[int, int], task: str, out_dir: Path,
                   progress: bool = True, dist: Any = None, convention: str = "coco",
                   voc: bool = False) -> dict[str, Any]:
    """COCO metrics (and with `voc` the Pascal VOC metric) of `model` on the loader's images.

    Under torchrun (`dist` of more than one rank) each rank predicts its own share of the images,
    the COCO results are gathered, and rank 0 scores them (the other ranks return {}).
    """

    if dist is not None and dist.enabled:
        loader = _shard(loader, dist.rank, dist.world_size)
    predictions = predict(model, loader, device, progress=progress)
    results = coco_results(predictions, label_to_cat_id, task)
    if dist is not None and dist.enabled:
        results = [r for part in dist.gather(results) for r in part]
        if not dist.is_main:
            return {}
        results.sort(key=lambda r: (r["image_id"], -r["score"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    return score_results(gt_path, results, task, out_dir, convention, voc)


def _shard(loader: Any, rank: int, world_size: int) -> Any:
    images = torch.utils.data.Subset(loader.dataset, range(rank, len(loader.dataset), world_size))
    return make_loader(images, loader.batch_size, shuffle=False, seed=0, num_workers=0)
