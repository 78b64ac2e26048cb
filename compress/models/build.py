"""torchvision Faster / Mask / Keypoint R-CNN on ResNet-18 / ResNet-50 / tiny FPN backbones.

No downloads: every model starts from `weights=None`; weights come from local files only
(`backbone_weights_path`: a ResNet state dict, e.g. ImageNet, `fc.*` ignored; `weights_path`: a
whole-model state dict or checkpoint dict with `model`). Norm: "batch" (trainable BatchNorm, the
from-scratch default: FrozenBatchNorm from random weights diverged), "frozen"
(FrozenBatchNorm2d, for pretrained backbones) or "group" (GroupNorm, up to 32 groups).
Note: with norm="batch" and trainable_layers < 5 the frozen stages' BatchNorm running statistics
still update in train mode; use norm="frozen" to freeze them too.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.misc import FrozenBatchNorm2d

from compress.core.checkpoint import state_dict_from_file
from compress.core.errors import ModelFileError
from compress.models.heads import (
    TINY_HEADS,
    HeadConfig,
    common_kwargs,
    keypoint_kwargs,
    mask_kwargs,
    rpn_parts,
)

log = logging.getLogger(__name__)

ARCH_TASK: dict[str, str] = {
    "fasterrcnn": "detection",
    "maskrcnn": "segmentation",
    "keypointrcnn": "keypoints",
}
BACKBONES = ("resnet18", "resnet50", "tiny")
NORMS = ("batch", "frozen", "group")
# Stages from the top of the network down, as torchvision's `trainable_layers` counts them (the tiny
# body has no layer3/layer4, so there trainable_layers=3 trains layer2 only).
_RESNET_STAGES = ["layer4", "layer3", "layer2", "layer1", "conv1"]
_TINY_CHANNELS = (8, 16)


def _group_norm(num_channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, num_channels), num_channels)


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """The norm constructor for "batch", "frozen" or "group"."""
    layers = {"batch": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d, "group": _group_norm}
    if norm not in layers:
        raise ValueError(f"norm must be one of {sorted(layers)}, got {norm!r}")
    return layers[norm]


class TinyResNet(nn.Module):
    """A minimal ResNet body for tests: stem (conv1+bn1), `layer1` (8 ch), `layer2` (16 ch, stride 2,
    with a `downsample` 1x1 shortcut conv), built from torchvision's BasicBlock so names match ResNet."""

    def __init__(self, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        c1, c2 = _TINY_CHANNELS
        self.conv1 = nn.Conv2d(3, c1, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = norm(c1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(resnet.BasicBlock(c1, c1, norm_layer=norm))
        shortcut = nn.Sequential(resnet.conv1x1(c1, c2, stride=2), norm(c2))
        self.layer2 = nn.Sequential(resnet.BasicBlock(c1, c2, stride=2, downsample=shortcut, norm_layer=norm))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))


def _load_backbone_weights(body: nn.Module, path: str | os.PathLike) -> None:
    """Load a classification ResNet state dict (or a detector's `backbone.body.*`) into `body`."""
    state = state_dict_from_file(path)
    for prefix in ("module.", "backbone.body."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    # The classifier head (`fc`) is dropped by the FPN wrapper: ignore it on both sides.
    load_checked(body, state, path, ignore_prefixes=("fc.",))


def _freeze(body: nn.Module, stages: list[str], trainable_layers: int) -> None:
    if not 0 <= trainable_layers <= len(stages):
        raise ValueError(f"trainable_layers must be in [0, {len(stages)}], got {trainable_layers}")
    train = stages[:trainable_layers] + (["bn1"] if trainable_layers == len(stages) else [])
    for name, param in body.named_parameters():
        if not any(name.startswith(stage) for stage in train):
            param.requires_grad_(False)


def build_backbone(
    backbone: str, *, norm: str, trainable_layers: int, fpn_channels: int,
    backbone_weights_path: str | os.PathLike | None = None,
) -> BackboneWithFPN:
    """ResNet (or tiny) body + FPN under `backbone.body` / `backbone.fpn`."""
    make_norm = norm_layer(norm)
    if backbone == "tiny":
        body: nn.Module = TinyResNet(make_norm)
        returned, in_channels = ["layer1", "layer2"], list(_TINY_CHANNELS)
    elif backbone in ("resnet18", "resnet50"):
        body = getattr(resnet, backbone)(weights=None, norm_layer=make_norm)
        returned = ["layer1", "layer2", "layer3", "layer4"]
        width = body.inplanes // 8  # 64 for BasicBlock ResNets, 256 for Bottleneck ones
        in_channels = [width * 2**i for i in range(4)]
    else:
        raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {backbone!r}")
    if backbone_weights_path is not None:
        _load_backbone_weights(body, backbone_weights_path)
    _freeze(body, _RESNET_STAGES, trainable_layers)
    return_layers = {name: str(i) for i, name in enumerate(returned)}
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels)


def build_model(
    arch: str, backbone: str, num_classes: int, *, num_keypoints: int = 17, trainable_layers: int = 5,
    norm: str = "batch", weights_path: str | os.PathLike | None = None,
    backbone_weights_path: str | os.PathLike | None = None, min_size: int = 800, max_size: int = 1333,
    heads: HeadConfig | None = None,
) -> nn.Module:
    """A torchvision R-CNN detector (`num_classes` includes the background class).

    `heads=None` means torchvision's head sizes (`HeadConfig()`), or `TINY_HEADS` for "tiny".
    """
    if arch not in ARCH_TASK:
        raise ValueError(f"arch must be one of {list(ARCH_TASK)}, got {arch!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    if heads is None:
        heads = TINY_HEADS if backbone == "tiny" else HeadConfig()
    body = build_backbone(backbone, norm=norm, trainable_layers=trainable_layers,
                          fpn_channels=heads.fpn_channels, backbone_weights_path=backbone_weights_path)
    featmaps = ["0", "1"] if backbone == "tiny" else ["0", "1", "2", "3"]
    default_sizes = (16, 32, 64) if backbone == "tiny" else (32, 64, 128, 256, 512)
    kwargs = rpn_parts(heads, len(featmaps) + 1, default_sizes)
    kwargs.update(common_kwargs(heads, num_classes, featmaps))
    kwargs.update(min_size=min_size, max_size=max_size)
    if arch == "fasterrcnn":
        model: nn.Module = FasterRCNN(body, **kwargs)
    elif arch == "maskrcnn":
        model = MaskRCNN(body, **kwargs, **mask_kwargs(heads, num_classes, featmaps))
    else:
        model = KeypointRCNN(body, **kwargs, **keypoint_kwargs(heads, num_keypoints, featmaps))
    if weights_path is not None:
        load_checked(model, state_dict_from_file(weights_path), weights_path)
    return model


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
                 ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load `state` into `module`; missing/unexpected keys or shape mismatches raise ModelFileError.

    `num_batches_tracked` buffers may be absent on either side (FrozenBatchNorm has none); keys
    starting with one of `ignore_prefixes` are neither checked nor loaded.
    """
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore_prefixes)}
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    skip = "num_batches_tracked"
    missing = [k for k in own if k not in state and not k.endswith(skip)]
    unexpected = [k for k in state if k not in own and not k.endswith(skip)]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
        if keys:
            problems.append(f"{label} ({len(keys)}): {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
    if problems:
        raise ModelFileError("does not fit the model: " + "; ".join(problems), file=str(path))
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    log.info("loaded %d tensors from %s", len(state), path)
