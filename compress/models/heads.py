"""Head settings and head builders for torchvision R-CNN detectors.

`HeadConfig` holds plain fields whose defaults are torchvision's own; `LIGHT_HEADS` is the
lightened set that trains Mask R-CNN R-18 FPN at ~0.5 s/iteration on 2 CPU cores (DESIGN.md).
Module names match torchvision exactly (`roi_heads.box_head.fc6`, `roi_heads.mask_head.0.0`,
`roi_heads.mask_predictor.conv5_mask`, `roi_heads.keypoint_predictor.kps_score_lowres`, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

ASPECT_RATIOS = (0.5, 1.0, 2.0)


@dataclass
class HeadConfig:
    """Sizes of the FPN, RPN and RoI heads. Defaults are torchvision's.

    `anchor_sizes`: one anchor size per feature level (None = torchvision's 32..512 for a ResNet
    FPN, 16/32/64 for the tiny backbone).
    """

    fpn_channels: int = 256
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_detections_per_img: int = 100
    representation_size: int = 1024
    mask_head_layers: int = 4
    mask_head_channels: int = 256
    keypoint_head_layers: int = 8
    keypoint_head_channels: int = 512
    anchor_sizes: tuple[int, ...] | None = None


# The smoke lightening measured in DESIGN.md (FPN 64 ch, 64 sampled RoIs, proposals 600/300,
# box head 256, 2-conv 64-ch mask head); the keypoint head is lightened the same way.
LIGHT_HEADS = HeadConfig(
    fpn_channels=64,
    rpn_pre_nms_top_n_train=600,
    rpn_pre_nms_top_n_test=600,
    rpn_post_nms_top_n_train=300,
    rpn_post_nms_top_n_test=300,
    rpn_batch_size_per_image=256,
    box_batch_size_per_image=64,
    box_detections_per_img=100,
    representation_size=256,
    mask_head_layers=2,
    mask_head_channels=64,
    keypoint_head_layers=2,
    keypoint_head_channels=64,
)


def check_heads(heads: HeadConfig) -> None:
    for name, value in vars(heads).items():
        if name == "anchor_sizes":
            if value is not None and (not value or any(int(v) <= 0 for v in value)):
                raise ValueError(f"heads.anchor_sizes must be positive integers, got {value!r}")
        elif not isinstance(value, int) or value <= 0:
            raise ValueError(f"heads.{name} must be a positive integer, got {value!r}")


def rpn_parts(heads: HeadConfig, num_levels: int, default_sizes: tuple[int, ...]) -> dict[str, Any]:
    """Anchor generator and RPN head for `num_levels` FPN outputs (pool level included)."""
    sizes = tuple(heads.anchor_sizes or default_sizes)
    if len(sizes) != num_levels:
        raise ValueError(f"heads.anchor_sizes needs {num_levels} sizes (one per level), got {sizes}")
    anchors = AnchorGenerator(tuple((s,) for s in sizes), (ASPECT_RATIOS,) * num_levels)
    head = RPNHead(heads.fpn_channels, anchors.num_anchors_per_location()[0])
    return {"rpn_anchor_generator": anchors, "rpn_head": head}


def common_kwargs(heads: HeadConfig, num_classes: int, featmaps: list[str]) -> dict[str, Any]:
    """Keyword arguments shared by FasterRCNN / MaskRCNN / KeypointRCNN constructors."""
    box_pool = MultiScaleRoIAlign(featmap_names=featmaps, output_size=7, sampling_ratio=2)
    size = heads.representation_size
    return {
        "rpn_pre_nms_top_n_train": heads.rpn_pre_nms_top_n_train,
        "rpn_pre_nms_top_n_test": heads.rpn_pre_nms_top_n_test,
        "rpn_post_nms_top_n_train": heads.rpn_post_nms_top_n_train,
        "rpn_post_nms_top_n_test": heads.rpn_post_nms_top_n_test,
        "rpn_batch_size_per_image": heads.rpn_batch_size_per_image,
        "box_batch_size_per_image": heads.box_batch_size_per_image,
        "box_detections_per_img": heads.box_detections_per_img,
        "box_roi_pool": box_pool,
        "box_head": TwoMLPHead(heads.fpn_channels * 7 * 7, size),
        "box_predictor": FastRCNNPredictor(size, num_classes),
    }


def mask_kwargs(heads: HeadConfig, num_classes: int, featmaps: list[str]) -> dict[str, Any]:
    channels = heads.mask_head_channels
    return {
        "mask_roi_pool": MultiScaleRoIAlign(featmap_names=featmaps, output_size=14, sampling_ratio=2),
        "mask_head": MaskRCNNHeads(heads.fpn_channels, [channels] * heads.mask_head_layers, 1),
        "mask_predictor": MaskRCNNPredictor(channels, channels, num_classes),
    }


def keypoint_kwargs(heads: HeadConfig, num_keypoints: int, featmaps: list[str]) -> dict[str, Any]:
    channels = heads.keypoint_head_channels
    layers = [channels] * heads.keypoint_head_layers
    return {
        "keypoint_roi_pool": MultiScaleRoIAlign(featmap_names=featmaps, output_size=14, sampling_ratio=2),
        "keypoint_head": KeypointRCNNHeads(heads.fpn_channels, layers),
        "keypoint_predictor": KeypointRCNNPredictor(channels, num_keypoints),
    }

# Default heads of the tiny test backbone (64 px images): small enough for sub-second test steps.
TINY_HEADS = HeadConfig(
    fpn_channels=16,
    rpn_pre_nms_top_n_train=200,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_train=100,
    rpn_post_nms_top_n_test=100,
    rpn_batch_size_per_image=64,
    box_batch_size_per_image=32,
    box_detections_per_img=50,
    representation_size=64,
    mask_head_layers=2,
    mask_head_channels=16,
    keypoint_head_layers=2,
    keypoint_head_channels=16,
)
