"""Which parameters the lottery prunes: the paper's default set, selected by module type + role.

Default (`scope="all"`): the weights of every Conv / ConvTranspose / Linear module of the backbone
body (stem included), FPN, RPN head conv, box head (fc6/fc7), mask head convs and the mask
predictor's deconv (`conv5_mask`), keypoint head convs.
Never selected by default: biases, normalisation layers, ResNet shortcut (`downsample`) convs and
the final predictors (box `cls_score`/`bbox_pred`, RPN `cls_logits`/`bbox_pred`,
`mask_fcn_logits`, the keypoint predictor; the `fc` classifier of a classification ResNet).
`scope="backbone"` keeps only the ResNet body (`backbone.body.*`, or a classification ResNet's
body), still without shortcuts.
`include` / `exclude` are regular expressions (`re.search` on the state-dict name) applied after
the default: include adds weights (for example a `downsample` conv), exclude removes.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable

import torch
from torch import nn

from compress.core.errors import RecipeError

log = logging.getLogger(__name__)

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
SCOPES = ("all", "backbone")


class PrunableSelectionError(RecipeError, ValueError):
    """An include/exclude pattern or scope that selects nothing usable."""


def _final_predictors(model: nn.Module) -> list[nn.Module]:
    """Modules whose outputs are the detector's (or classifier's) final predictions."""
    from torchvision.models import ResNet
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.rpn import RegionProposalNetwork

    found: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, RoIHeads):
            found += [m for m in (module.box_predictor, module.keypoint_predictor) if m is not None]
            if module.mask_predictor is not None:
                logits = getattr(module.mask_predictor, "mask_fcn_logits", None)
                found.append(logits if logits is not None else module.mask_predictor)
        elif isinstance(module, RegionProposalNetwork):
            head = module.head
            found += [getattr(head, n) for n in ("cls_logits", "bbox_pred") if hasattr(head, n)]
        elif isinstance(module, ResNet):
            found.append(module.fc)
    return found


def _shortcuts(model: nn.Module) -> list[nn.Module]:
    """ResNet shortcut convs: whatever a block holds as `downsample` / `shortcut`."""
    found = []
    for module in model.modules():
        for attr in ("downsample", "shortcut"):
            child = getattr(module, attr, None)
            if isinstance(child, nn.Module):
                found.append(child)
    return found


def _excluded_module_ids(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for root in _final_predictors(model) + _shortcuts(model):
        ids.update(id(m) for m in root.modules())
    return ids


def body_prefix(model: nn.Module) -> str:
    """State-dict prefix of the ResNet body: `backbone.body.` for a detector, '' for a ResNet."""
    from torchvision.models import ResNet

    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "body"):
        return "backbone.body."
    if isinstance(model, ResNet):
        return ""
    raise PrunableSelectionError(
        f"scope 'backbone': model {type(model).__name__} has no backbone.body; allowed scopes "
        f"{', '.join(SCOPES)} (use 'all' with include/exclude)", key="lottery.scope")


def weight_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """State-dict name -> module for the `weight` of every Conv/ConvTranspose/Linear module."""
    out: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and isinstance(module.weight, torch.Tensor):
            out[f"{name}.weight" if name else "weight"] = module
    return out


def default_prunable(model: nn.Module, scope: str = "all") -> list[str]:
    """The paper's default prunable weights for `scope`, in state-dict order."""
    if scope not in SCOPES:
        raise PrunableSelectionError(
            f"unknown scope '{scope}'; allowed: {', '.join(SCOPES)}", key="lottery.scope")
    excluded = _excluded_module_ids(model)
    names = [n for n, m in weight_candidates(model).items() if id(m) not in excluded]
    if scope == "backbone":
        prefix = body_prefix(model)
        names = [n for n in names if n.startswith(prefix)]
    return names


def _compile(patterns: Iterable[str], key: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise PrunableSelectionError(
                f"invalid regular expression '{pattern}': {err}", key=key) from err
    return compiled


def select_prunable(model: nn.Module, scope: str = "all", include: list[str] | None = None,
                    exclude: list[str] | None = None) -> list[str]:
    """Names (as in `model.state_dict()`) of the weights the pruner may zero, in model order.

    An include pattern must match at least one parameter, and only Conv/ConvTranspose/Linear
    weights (never a bias or a norm weight); an exclude pattern must match some parameter.
    Either mistake raises `PrunableSelectionError` (a `RecipeError` and a `ValueError`).
    """
    selected = set(default_prunable(model, scope))
    all_names = [n for n, _ in model.named_parameters()]
    candidates = weight_candidates(model)
    for pattern in _compile(include or [], "lottery.include"):
        hits = [n for n in all_names if pattern.search(n)]
        bad = [n for n in hits if n not in candidates]
        if not hits or bad:
            what = f"non-weight parameter '{bad[0]}'" if bad else "no parameter"
            raise PrunableSelectionError(
                f"include pattern '{pattern.pattern}' matches {what}; it may match only weights "
                "of Conv/ConvTranspose/Linear modules", key="lottery.include")
        selected.update(hits)
    for pattern in _compile(exclude or [], "lottery.exclude"):
        hits = [n for n in all_names if pattern.search(n)]
        if not hits:
            raise PrunableSelectionError(
                f"exclude pattern '{pattern.pattern}' matches no parameter", key="lottery.exclude")
        selected.difference_update(hits)
    ordered = [n for n in candidates if n in selected]
    if not ordered:
        raise PrunableSelectionError(
            f"scope '{scope}' with include {include or []} / exclude {exclude or []} selects no "
            "prunable weight", key="lottery.scope")
    log.debug("prunable: %d tensors", len(ordered))
    return ordered
