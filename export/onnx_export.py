"""Export a torchvision R-CNN to ONNX: the full detector and the backbone + FPN graph.

Both exports use the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`, opset 11-17):
the dynamo exporter needs onnx >= 1.17 and fails on the detectors' NMS. BatchNorm is folded into
the convolutions during export, which renames those weights (`onnx::Conv_123`); `compress.export.verify`
maps them back to torch names through the node scopes.

Full graph: input `images` is one 3xHxW float image in [0, 1] (H, W dynamic), outputs `boxes`,
`labels`, `scores` and `masks` (Mask R-CNN) or `keypoints`, `keypoints_scores` (Keypoint R-CNN).
Backbone graph: input `images` Nx3xHxW in [0, 1] (N dynamic, H and W fixed), normalised with the
model's own mean/std inside the graph, outputs `fpn_<level>` for each FPN level.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from google.protobuf.message import DecodeError

from compress.core.atomic import temp_beside
from compress.core.errors import ModelFileError, UserError

log = logging.getLogger(__name__)

MIN_OPSET = 11
MAX_OPSET = 17


def check_opset(opset: int) -> int:
    """Return `opset` if this exporter supports it, else raise UserError (one line)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"opset {opset!r} is not supported; allowed: {MIN_OPSET}..{MAX_OPSET}",
                        key="--opset")
    return opset


def _hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and check an ONNX file; a missing, non-ONNX or truncated file raises ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("file not found; expected an ONNX model file", file=str(path))
    try:
        model = onnx.load_model_from_string(path.read_bytes())
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, RuntimeWarning, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"not a valid ONNX model ({first})", file=str(path)) from err
    if not model.graph.node:
        raise ModelFileError("not a valid ONNX model (empty graph)", file=str(path))
    return model


def output_names(model: torch.nn.Module) -> list[str]:
    """Names of the full graph's outputs for this detector."""
    names = ["boxes", "labels", "scores"]
    heads = getattr(model, "roi_heads", None)
    if heads is not None and getattr(heads, "mask_predictor", None) is not None:
        names.append("masks")
    if heads is not None and getattr(heads, "keypoint_predictor", None) is not None:
        names += ["keypoints", "keypoints_scores"]
    return names


def canonical_zeros(path: str | os.PathLike) -> int:
    """Rewrite -0.0 in fp32 initializers as +0.0 in place; returns how many were rewritten.

    Pruning by multiplication and BatchNorm folding with a negative scale both leave -0.0 where a
    weight was pruned; the two are numerically equal, but the sign bit costs the compact archive a
    stored value per pruned weight. Canonical zeros keep it at the information bound.
    """
    model = onnx.load(str(path))
    fixed = 0
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        array = onnx.numpy_helper.to_array(tensor).copy()
        negative_zero = (array == 0) & np.signbit(array)
        if negative_zero.any():
            array[negative_zero] = 0.0
            tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
            fixed += int(negative_zero.sum())
    if fixed:
        onnx.save(model, str(path))
        log.info("%s: rewrote %d negative zeros as +0.0", path, fixed)
    return fixed


def _export_atomic(module: torch.nn.Module, args: tuple, path: Path, **kwargs) -> Path:
    """torch.onnx.export into a temp file beside `path`, full check, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)  # the toolkit's temp name: a resume removes one a kill left
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, tmp, dynamo=False, do_constant_folding=True,
                              training=torch.onnx.TrainingMode.EVAL, **kwargs)
        canonical_zeros(tmp)
        onnx.checker.check_model(tmp, full_check=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported %s (%d bytes)", path, path.stat().st_size)
    return path


def export_full(model: torch.nn.Module, path: str | os.PathLike, *,
                image_size: int | tuple[int, int], opset: int = 17) -> Path:
    """Export the whole detector (one image in, detections out); returns the written path."""
    check_opset(opset)
    height, width = _hw(image_size)
    model = model.eval()
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    outputs = output_names(model)
    dynamic = {"images": {1: "height", 2: "width"}}
    for name in outputs:
        dynamic[name] = {0: "detections"}
    if "masks" in outputs:
        dynamic["masks"] = {0: "detections", 2: "height", 3: "width"}
    return _export_atomic(model, ([image],), Path(path), opset_version=opset,
                          input_names=["images"], output_names=outputs, dynamic_axes=dynamic)


class BackboneGraph(torch.nn.Module):
    """Normalisation + backbone + FPN of a torchvision R-CNN, returning a tuple of FPN levels."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.backbone = model.backbone
        mean = torch.tensor(model.transform.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(model.transform.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.levels = self._levels()

    def _levels(self) -> list[str]:
        with torch.no_grad():
            features = self.backbone(torch.zeros(1, 3, 64, 64))
        return list(features.keys()) if isinstance(features, OrderedDict | dict) else ["0"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone((images - self.mean) / self.std)
        if isinstance(features, torch.Tensor):
            return (features,)
        return tuple(features[level] for level in self.levels)


def backbone_output_names(graph: BackboneGraph) -> list[str]:
    return [f"fpn_{level}" for level in graph.levels]


def export_backbone(model: torch.nn.Module, path: str | os.PathLike, *,
                    image_size: int | tuple[int, int], opset: int = 17, batch: int = 1) -> Path:
    """Export normalisation + backbone + FPN as a plain NCHW graph (batch dimension dynamic)."""
    check_opset(opset)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch {batch!r} must be an integer >= 1", key="--batch")
    height, width = _hw(image_size)
    graph = BackboneGraph(model.eval()).eval()
    images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    outputs = backbone_output_names(graph)
    dynamic = {name: {0: "batch"} for name in ["images", *outputs]}
    return _export_atomic(graph, (images,), Path(path), opset_version=opset,
                          input_names=["images"], output_names=outputs, dynamic_axes=dynamic)
