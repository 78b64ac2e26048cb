"""Run an exported full R-CNN graph (export/onnx_export.py `export_full`) on images with ONNX
Runtime and return torchvision-style output dicts, so the torch and deployed models share one
evaluation path."""
from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import torch

from evaluate.runtimes.ort import ort_session


class OnnxDetector:
    """`detector(image)` -> {boxes, labels, scores[, masks][, keypoints, keypoints_scores]}.

    `image` is a 3xHxW float tensor in [0, 1]; outputs are CPU tensors shaped as torchvision's
    eval-mode outputs (masks N x 1 x H x W probabilities, keypoints N x K x 3).
    """

    def __init__(self, onnx_path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
                 spinning: bool = True):
        self.session = ort_session(onnx_path, provider=provider, threads=threads, spinning=spinning)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        array = image.detach().cpu().float().numpy()
        values = self.session.run(None, {self.input_name: np.ascontiguousarray(array)})
        return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(self.output_names, values)}


def predict_onnx(detector: OnnxDetector, loader: Iterable[Any]) -> list[tuple[int, dict]]:
    """(image_id, outputs) for every image of a detection loader (batches of (images, targets))."""
    out: list[tuple[int, dict]] = []
    for images, targets in loader:
        for image, target in zip(images, targets):
            image_id = target["image_id"]
            out.append((int(image_id.item() if torch.is_tensor(image_id) else image_id), detector(image)))
    return out
