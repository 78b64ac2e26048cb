"""Datasets: COCO, Pascal VOC (bridged to COCO ground truth) and the built-in synthetic set."""
from compress.data.coco import CocoDetection, load_coco_json
from compress.data.loaders import build_dataset, collate_fn, make_loader
from compress.data.synth import write_synthetic, write_synthetic_splits
from compress.data.voc import VOCDetection, voc_to_coco, write_tiny_voc

__all__ = [
    "CocoDetection", "VOCDetection", "build_dataset", "collate_fn",
    "load_coco_json", "make_loader", "voc_to_coco", "write_synthetic", "write_synthetic_splits",
    "write_tiny_voc",
]
