"""select_prunable: the paper's default set, scopes and regex overrides, on real torchvision models."""
from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from compress.core.errors import RecipeError
from compress.models.build import build_model
from compress.models.prunable import PrunableSelectionError, select_prunable

# Reference built from names only (the implementation selects by module type and role).
FINAL = re.compile(r"box_predictor|rpn\.head\.(cls_logits|bbox_pred)|mask_fcn_logits|keypoint_predictor")


def reference_default(model: nn.Module) -> list[str]:
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if "downsample" not in name and not FINAL.search(name):
                out.append(f"{name}.weight")
    return out


@pytest.fixture(scope="module", params=["fasterrcnn", "maskrcnn", "keypointrcnn"])
def tiny(request):
    torch.manual_seed(0)
    return request.param, build_model(request.param, "tiny", 3, min_size=64, max_size=64)


def test_default_matches_paper_set(tiny):
    arch, model = tiny
    names = select_prunable(model)
    assert names == reference_default(model)
    state = model.state_dict()
    assert all(n.endswith(".weight") and state[n].dim() >= 2 for n in names)
    assert not any("downsample" in n or "bn" in n or n.endswith(".bias") for n in names)
    assert any("downsample" in n for n in state)  # the tiny body does have a shortcut conv
    must = ["backbone.body.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight",
            "backbone.fpn.layer_blocks.1.0.weight", "rpn.head.conv.0.0.weight",
            "roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc7.weight"]
    must += {"maskrcnn": ["roi_heads.mask_head.0.0.weight", "roi_heads.mask_predictor.conv5_mask.weight"],
             "keypointrcnn": ["roi_heads.keypoint_head.0.weight"], "fasterrcnn": []}[arch]
    assert set(must) <= set(names)
    never = ["roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight",
             "rpn.head.cls_logits.weight", "rpn.head.bbox_pred.weight",
             "roi_heads.mask_predictor.mask_fcn_logits.weight",
             "roi_heads.keypoint_predictor.kps_score_lowres.weight"]
    assert not set(never) & set(names)


def test_scope_backbone_keeps_only_body(tiny):
    _, model = tiny
    names = select_prunable(model, scope="backbone")
    assert names and all(n.startswith("backbone.body.") for n in names)
    assert names == [n for n in select_prunable(model) if n.startswith("backbone.body.")]


def test_resnet18_fpn_detector_excludes_every_shortcut():
    model = torchvision.models.detection.FasterRCNN(
        resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                            norm_layer=nn.BatchNorm2d), num_classes=3, min_size=64, max_size=64)
    names = select_prunable(model)
    assert names == reference_default(model)
    body = select_prunable(model, scope="backbone")
    assert len(body) == 1 + 16  # stem + 8 BasicBlocks x 2 convs, no downsample
    assert sum("downsample" in n for n in model.state_dict() if n.endswith("weight")) == 6


def test_classification_resnet_excludes_fc():
    model = torchvision.models.resnet18(weights=None)
    names = select_prunable(model)
    assert "conv1.weight" in names and "fc.weight" not in names
    assert select_prunable(model, scope="backbone") == names
    assert not any("downsample" in n for n in names)


def test_include_exclude_overrides():
    model = build_model("maskrcnn", "tiny", 3, min_size=64, max_size=64)
    base = select_prunable(model)
    with_short = select_prunable(model, include=[r"downsample\.0\.weight"])
    assert set(with_short) - set(base) == {"backbone.body.layer2.0.downsample.0.weight"}
    no_fpn = select_prunable(model, exclude=["fpn"])
    assert set(base) - set(no_fpn) == {n for n in base if ".fpn." in n}
    both = select_prunable(model, scope="backbone", include=["box_predictor.cls_score.weight"],
                           exclude=[r"^backbone\.body\.conv1\."])
    assert "roi_heads.box_predictor.cls_score.weight" in both
    assert "backbone.body.conv1.weight" not in both


@pytest.mark.parametrize("kwargs, pattern", [
    ({"include": ["bias"]}, "bias"),
    ({"include": [r"bn1\.weight"]}, r"bn1\.weight"),
    ({"include": ["no_such_layer"]}, "no_such_layer"),
    ({"exclude": ["no_such_layer"]}, "no_such_layer"),
    ({"include": ["("]}, "("),
    ({"exclude": [".*"]}, "selects no"),
    ({"scope": "heads"}, "heads"),
])
def test_bad_selection_raises_with_pattern(kwargs, pattern):
    model = build_model("fasterrcnn", "tiny", 3, min_size=64, max_size=64)
    with pytest.raises(ValueError) as info:
        select_prunable(model, **kwargs)
    assert pattern in str(info.value)
    assert isinstance(info.value, RecipeError) and isinstance(info.value, PrunableSelectionError)
