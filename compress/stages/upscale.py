"""Detections predicted on a shrunk copy of a huge image, brought back to the image's own size one
mask at a time.

A mask of a 13000 x 13000 image is 676 MB as floats and 169 MB as bytes: instead of upsampling
every kept mask at once (N x 676 MB), each is upsampled as an 8-bit image (Pillow, bilinear),
thresholded and RLE-encoded, then dropped. Boxes and keypoints are scaled.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from compress.report.drawing import MASK_THRESHOLD
from compress.evaluate.metrics.detections import outputs_to_coco_results


def scale_outputs(outputs: Mapping[str, torch.Tensor], size: tuple[int, int],
                  original: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Boxes and keypoints predicted at `size` (h, w) in `original` (h, w) pixels; masks left out."""
    (height, width), (h0, w0) = size, original
    scale = torch.tensor([w0 / width, h0 / height])
    out = {name: value for name, value in outputs.items() if name != "masks"}
    out["boxes"] = out["boxes"] * scale.repeat(2)
    if "keypoints" in out:
        out["keypoints"] = torch.cat([out["keypoints"][..., :2] * scale, out["keypoints"][..., 2:]], -1)
    return out


def full_size_masks(masks: torch.Tensor, original: tuple[int, int]) -> Iterator[np.ndarray]:
    """Each mask (N x 1 x h x w probabilities) as an `original`-sized uint8 0/1 array, one at a
    time, Fortran-ordered as pycocotools encodes it (resized transposed, so no copy is needed)."""
    h0, w0 = original
    for mask in masks.reshape(len(masks), *masks.shape[-2:]):
        small = (mask.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy().T.copy()
        with Image.fromarray(small).resize((h0, w0), Image.BILINEAR) as big:
            transposed = np.asarray(big)  # w0 x h0, C order: its .T is h0 x w0, Fortran order
        yield (transposed.T > round(MASK_THRESHOLD * 255)).view(np.uint8)


def rle(binary: np.ndarray) -> dict[str, Any]:
    """COCO's RLE (counts as str) of a 0/1 uint8 mask, the runs found with numpy (pycocotools'
    encode allocates 4 bytes a pixel: 676 MB for one mask of a 13000 px image)."""
    height, width = binary.shape
    flat = binary.ravel(order="F")  # column-major, as COCO counts: a view of a Fortran array
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # COCO's runs start with background
    encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    text = encoded["counts"]
    return {"size": [int(height), int(width)],
            "counts": text.decode("ascii") if isinstance(text, bytes) else text}


def upscaled_results(outputs: Mapping[str, torch.Tensor], size: tuple[int, int],
                     original: tuple[int, int], image_id: int, mapping: Mapping[int, int],
                     task: str) -> list[dict]:
    """COCO results at the `original` (h, w) size of outputs predicted at `size`; each mask
    (segmentation task) is brought to full size, RLE-encoded and dropped, one at a time."""
    results = outputs_to_coco_results(image_id, scale_outputs(outputs, size, original), mapping, task)
    if task == "segmentation" and "masks" in outputs and len(outputs["masks"]):
        for result, binary in zip(results, full_size_masks(outputs["masks"], original)):
            result["segmentation"] = rle(binary)
            del binary
    return results
