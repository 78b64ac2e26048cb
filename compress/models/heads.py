"""Head settings and head builders for torchvision R-CNN detectors.

`HeadConfig` holds the head sizes (torchvision's defaults; recipes lighten them for CPU runs).
Module names match torchvision exactly (`roi_heads.box_head.fc6`, `roi_heads.mask_head.0.0`,
`roi_heads.mask_predictor.conv5_mask`, `roi_heads.keypoint_predictor.kps_score_lowres`, ...).
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

ASPECT_RATIOS = (0.5, 1.0, 2.0)


class HeadConfig(BaseModel):
    """Sizes of the FPN, RPN and RoI heads (torchvision constructor arguments; lighter = faster).

    Defaults are torchvision's. The recipe's `model.heads` section is this model.
    `anchor_sizes`: one anchor size per feature level (None = torchvision's 32..512 for a ResNet
    FPN, 16/32/64 for the tiny backbone).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    fpn_channels: int = Field(256, ge=8, le=1024)
    rpn_pre_nms_top_n_train: int = Field(2000, ge=1, le=100000)
    rpn_pre_nms_top_n_test: int = Field(1000, ge=1, le=100000)
    rpn_post_nms_top_n_train: int = Field(2000, ge=1, le=100000)
    rpn_post_nms_top_n_test: int = Field(1000, ge=1, le=100000)
    rpn_batch_size_per_image: int = Field(256, ge=1, le=4096)
    box_batch_size_per_image: int = Field(512, ge=1, le=4096)
    box_detections_per_img: int = Field(100, ge=1, le=1000)
    representation_size: int = Field(1024, ge=8, le=8192)
    mask_head_layers: int = Field(4, ge=1, le=16)
    mask_head_channels: int = Field(256, ge=8, le=1024)
    keypoint_head_layers: int = Field(8, ge=1, le=16)
    keypoint_head_channels: int = Field(512, ge=8, le=1024)
    anchor_sizes: Optional[list[PositiveInt]] = Field(None, min_length=1)


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
