"""How a run scores detections on its validation set, in one object: the ground truth, the label
map back to its category ids, the task (which COCO iou types), the segm area convention and
whether the set is Pascal VOC (then the VOC metric too). Built once from the recipe and the data
(`compress.run.setup.prepare_data`) and handed to every engine's evaluation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from compress.core.atomic import write_json
from compress.evaluate.metrics.coco import coco_stats
from compress.evaluate.metrics.detections import outputs_to_coco_results
from compress.evaluate.metrics.voc import voc_ap

TASK_IOU_TYPES = {"detection": ("bbox",), "segmentation": ("bbox", "segm"),
                  "keypoints": ("bbox", "keypoints")}
IOU_PREFIX = {"bbox": "bbox", "segm": "segm", "keypoints": "kp"}


@dataclass(frozen=True)
class Scorer:
    """`convention` is the recipe's evaluate.convention (see compress.evaluate.metrics.coco); `voc`: a
    Pascal VOC validation set."""
    gt_path: Path
    label_to_cat_id: dict[int, int]
    task: str
    convention: str = "coco"
    voc: bool = False

    @property
    def iou_types(self) -> tuple[str, ...]:
        return TASK_IOU_TYPES[self.task]

    def results(self, predictions: Iterable[tuple[int, dict]]) -> list[dict]:
        """COCO results of (image_id, outputs) predictions, labels mapped to category ids."""
        results: list[dict] = []
        for image_id, outputs in predictions:
            results.extend(outputs_to_coco_results(image_id, outputs, self.label_to_cat_id,
                                                   self.task))
        return results

    def score_predictions(self, predictions: Iterable[tuple[int, dict]],
                          out_dir: Path) -> dict[str, Any]:
        return self.score(self.results(predictions), out_dir)

    def score(self, results: list[dict], out_dir: Path) -> dict[str, Any]:
        """Write results.json and metrics.json into out_dir; return the flat round metrics.

        COCO-style AP per iou type; with `voc` also the VOC metric (metrics.json `voc`: per-class
        and mean AP50, VOC07 11-point and area rule, difficult objects ignored; flat:
        voc07_mAP50, voc_area_mAP50 and voc_per_class).
        """
        full: dict[str, Any] = {}
        flat: dict[str, Any] = {}
        for iou_type in self.iou_types:
            stats = coco_stats(self.gt_path, results, iou_type, convention=self.convention)
            full[iou_type] = stats
            prefix = IOU_PREFIX[iou_type]
            flat[f"{prefix}_mAP"] = stats["AP"]
            flat[f"{prefix}_AP50"] = stats["AP50"]
            flat[f"{prefix}_AP75"] = stats["AP75"]
        if self.voc:
            full["voc"] = voc_ap(self.gt_path, results)
            flat["voc07_mAP50"] = full["voc"]["voc07_mAP50"]
            flat["voc_area_mAP50"] = full["voc"]["voc_area_mAP50"]
            flat["voc_per_class"] = {name: {k: row[k] for k in ("voc07_AP50", "voc_area_AP50")}
                                     for name, row in full["voc"]["per_class"].items()}
        write_json(out_dir / "results.json", results, indent=None)
        write_json(out_dir / "metrics.json", full)
        return flat
