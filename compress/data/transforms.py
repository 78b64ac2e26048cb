"""Transforms for (image, target) pairs of the torchvision detectors.

Resizing and normalisation are done by the model's own `GeneralizedRCNNTransform`, so there is
no resize here: only conversion to a float tensor and a random horizontal flip that moves
boxes, masks and keypoints with the image (keypoints also swap left/right partners).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

Pair = tuple[Any, dict]


class Compose:
    """Apply transforms in order to an (image, target) pair."""

    def __init__(self, transforms: Sequence[Callable[[Any, dict], Pair]]):
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: dict) -> Pair:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class ToTensor:
    """PIL image or HxWxC uint8 array -> float32 CxHxW tensor in [0, 1]."""

    def __call__(self, image: Any, target: dict) -> tuple[torch.Tensor, dict]:
        if isinstance(image, torch.Tensor):
            return image.float(), target
        array = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if array.ndim == 2:
            array = array[:, :, None].repeat(3, axis=2)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)).permute(2, 0, 1)
        return tensor.float().div_(255.0), target


def flip_target(target: dict, width: int, keypoint_flip_perm: Sequence[int] | None) -> dict:
    """The target of the horizontally mirrored image (image width `width` pixels).

    Boxes x1, x2 -> width - x2, width - x1; masks mirror; keypoint x -> width - x, then each
    keypoint takes its left/right partner's slot; keypoints with visibility 0 are zeroed
    (as in the torchvision references).
    """
    flipped = dict(target)
    if "boxes" in target:
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        flipped["boxes"] = boxes
    if "masks" in target:
        flipped["masks"] = target["masks"].flip(-1)
    if "keypoints" in target:
        keypoints = target["keypoints"].clone()
        if keypoint_flip_perm is None:
            raise ValueError("flipping keypoints needs keypoint_flip_perm (left/right partners)")
        keypoints[..., 0] = width - keypoints[..., 0]
        keypoints = keypoints[:, list(keypoint_flip_perm)]
        keypoints[keypoints[..., 2] == 0] = 0
        flipped["keypoints"] = keypoints
    return flipped


class RandomHorizontalFlip:
    """Mirror the image and its target with probability `prob` (torch's global RNG)."""

    def __init__(self, prob: float = 0.5, keypoint_flip_perm: Sequence[int] | None = None):
        self.prob = prob
        self.keypoint_flip_perm = list(keypoint_flip_perm) if keypoint_flip_perm else None

    def __call__(self, image: Any, target: dict) -> Pair:
        if torch.rand(1).item() >= self.prob:
            return image, target
        if isinstance(image, torch.Tensor):
            return image.flip(-1), flip_target(target, image.shape[-1], self.keypoint_flip_perm)
        mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return mirrored, flip_target(target, image.width, self.keypoint_flip_perm)


def default_transforms(train: bool, keypoint_flip_perm: Sequence[int] | None = None) -> Compose:
    """ToTensor, plus a 50% horizontal flip when training."""
    steps: list[Callable[[Any, dict], Pair]] = [ToTensor()]
    if train:
        steps.append(RandomHorizontalFlip(0.5, keypoint_flip_perm))
    return Compose(steps)
