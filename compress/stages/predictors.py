"""The models `compress predict` runs, each as a call image -> torchvision-style outputs that keeps
only the detections scoring >= the threshold, filtered BEFORE masks are brought to the image's
size: a mask of a 13000 x 13000 image is 676 MB as floats, so upsampling the model's 100 masks
first (as the plain detectors do) needs 68 GB.

- an export folder: its DeepSparse deployment, or (onnxruntime) the full graph on the same canvas;
- an exported `.onnx`: a graph with a fixed image size gets each image resized to it, a dynamic one
  gets images larger than `DYNAMIC_MAX_SIDE` resized down (the detector resizes to its own
  max_size, at most 1333 px, anyway), masks mapped back after the filter;
- a torch checkpoint: torchvision's forward run in its steps, the filter before `postprocess`.
Close each with `close_predictor`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.core.errors import UserError
from compress.run.loaded import load_model
from compress.quantize.phase import load_int8
from compress.evaluate.engines import DEPLOYMENT, ENGINES, FULL_GRAPH
from compress.evaluate.runtimes.deepsparse_server import DeepSparseFailed
from compress.evaluate.runtimes.pipeline import DeployedDetector, from_canvas, keep_scores, to_canvas
from compress.evaluate.runtimes.pipeline_bench import full_graph_on_canvas

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], dict[str, torch.Tensor]]
DYNAMIC_MAX_SIDE = 1333


class CanvasPredictor:
    """Images onto a fixed canvas, `run_canvas` on it, detections kept then mapped back."""

    def __init__(self, run_canvas: Callable[[np.ndarray], dict[str, Any]], height: int,
                 width: int, score_threshold: float, owner: Any = None):
        self.run_canvas, self.height, self.width = run_canvas, height, width
        self.score_threshold, self.owner = score_threshold, owner

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        array, place = to_canvas(image, self.height, self.width)
        outputs = {name: np.asarray(value) for name, value in self.run_canvas(array).items()}
        return from_canvas(outputs, place, score_threshold=self.score_threshold)

    def close(self) -> None:
        close_predictor(self.owner)


def deployment_predictor(export_dir: Path, engine: str, score_threshold: float) -> Predictor:
    """An export folder: its DeepSparse deployment, or (onnxruntime) its full graph on the same
    canvas, so both engines see the same pixels."""
    return _FOLDER_PREDICTORS[ENGINES[engine].runs](export_dir, engine, score_threshold)


def _deployed(export_dir: Path, engine: str, score_threshold: float) -> Predictor:
    try:
        detector = DeployedDetector(export_dir, engine=engine)
    except DeepSparseFailed as err:
        raise UserError(f"DeepSparse cannot run this deployment: {err}", key="--engine") from err
    canvas = detector.manifest.canvas
    return CanvasPredictor(detector.run_canvas, canvas.height, canvas.width, score_threshold,
                           owner=detector)


def _full_graph(export_dir: Path, engine: str, score_threshold: float) -> Predictor:
    return full_graph_on_canvas(export_dir, engine, score_threshold=score_threshold)


_FOLDER_PREDICTORS = {DEPLOYMENT: _deployed, FULL_GRAPH: _full_graph}  # by what the engine runs


def close_predictor(predictor: Any) -> None:
    close = getattr(predictor, "close", None)
    if close is not None:
        close()


def fit_to_graph(detector: Predictor, input_shape: list[Any],
                 score_threshold: float | None = None) -> Predictor:
    """A graph with a fixed image size (3 x H x W static) gets each image resized to it. With
    `score_threshold` (as predict runs it) detections are kept before masks are mapped back, and
    a dynamic graph gets images larger than DYNAMIC_MAX_SIDE resized down; without, a dynamic
    graph runs as is."""
    fixed = [d if isinstance(d, int) else None for d in input_shape[-2:]]
    if None in fixed:
        if score_threshold is None:
            return detector
        return resizing(detector, lambda h, w: _fit_side(h, w, DYNAMIC_MAX_SIDE), score_threshold)
    log.info("the graph takes %dx%d images only: images are resized to it", *fixed)
    return resizing(detector, lambda h, w: (fixed[0], fixed[1]), score_threshold)


def resizing(detector: Predictor, size_of: Callable[[int, int], tuple[int, int]],
             score_threshold: float | None) -> Predictor:
    """`detector` run on each image resized to `size_of(height, width)`; detections kept, then
    boxes, keypoints and masks mapped back to the image's own size."""
    def predict(image: torch.Tensor) -> dict[str, torch.Tensor]:
        h0, w0 = int(image.shape[-2]), int(image.shape[-1])
        height, width = size_of(h0, w0)
        if (h0, w0) == (height, width):
            return keep_scores(dict(detector(image)), score_threshold)
        resized = torch.nn.functional.interpolate(image[None], size=(height, width), mode="bilinear",
                                                  align_corners=False)[0]
        out = keep_scores(dict(detector(resized)), score_threshold)
        return restore(out, (height, width), (h0, w0))
    return predict


def _fit_side(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def restore(out: dict[str, torch.Tensor], size: tuple[int, int],
            original: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Outputs predicted on an image resized to `size` mapped back to the `original` size."""
    (height, width), (h0, w0) = size, original
    scale = torch.tensor([w0 / width, h0 / height])
    out["boxes"] = out["boxes"] * scale.repeat(2)
    if "keypoints" in out:
        out["keypoints"] = torch.cat([out["keypoints"][..., :2] * scale, out["keypoints"][..., 2:]], -1)
    if "masks" in out and len(out["masks"]):
        out["masks"] = torch.nn.functional.interpolate(out["masks"], size=(h0, w0), mode="bilinear",
                                                       align_corners=False)
    return out


def torch_predictor(checkpoint: Path, score_threshold: float | None = None) -> Predictor:
    """The torch model of a run folder / ticket.pt / round checkpoint as an image -> outputs call;
    with `score_threshold`, detections are filtered before masks are pasted at image size, and
    an image larger than the model's max_size is resized to it first (the model would anyway)."""

    if checkpoint.name == "model.pt" and checkpoint.resolve().parent.name == "quantize":
        model = load_int8(checkpoint)  # the INT8 ticket (fake-quantized)
    else:
        model = load_model(checkpoint).model.eval()
    if score_threshold is None:
        def predict(image: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return model([image])[0]
        return predict

    def filtered(image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return _filtered_forward(model, image, score_threshold)
    max_side = int(max(model.transform.max_size, max(model.transform.min_size)))
    return resizing(filtered, lambda h, w: _fit_side(h, w, max_side), score_threshold)


def _filtered_forward(model: Any, image: torch.Tensor, score_threshold: float) -> dict[str, Any]:
    """torchvision's GeneralizedRCNN.forward (eval) with the score filter before postprocess."""
    original = [(int(image.shape[-2]), int(image.shape[-1]))]
    images, _ = model.transform([image])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features)
    detections, _ = model.roi_heads(features, proposals, images.image_sizes)
    detections = [keep_scores(d, score_threshold) for d in detections]
    return model.transform.postprocess(detections, images.image_sizes, original)[0]
