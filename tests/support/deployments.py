"""Tiny exported detectors with their partitioned deployment (export/deploy), for the tests."""
from __future__ import annotations

from pathlib import Path

import torch

from compress.core.deploy_manifest import Manifest
from compress.export.deploy.build import build_deployment
from compress.export.onnx_export import export_full
from tests.support.onnx_models import SIZE, pruned_tiny


def images(count: int = 3, size: int = SIZE) -> list[torch.Tensor]:
    return [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(count)]


def tiny_deployment(arch: str, folder: Path) -> tuple[Path, Manifest]:
    """`folder/model.onnx` + `folder/deploy/`; returns the export folder and the manifest."""
    model, _ = pruned_tiny(arch)
    export_full(model, folder / "model.onnx", image_size=SIZE, opset=17)
    manifest = build_deployment(folder / "model.onnx", folder / "deploy", canvas_size=SIZE,
                                roi_count=int(model.rpn._post_nms_top_n["testing"]),
                                max_detections=int(model.roi_heads.detections_per_img),
                                images=images())
    return folder, manifest
