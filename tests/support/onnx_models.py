"""Tiny detectors with random BN statistics and randomly pruned weights, for the export tests."""
from __future__ import annotations

import torch

from compress.models.build import build_model

SIZE = 64


def _randomise_bn(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics (some negative scales) so folding really rescales the convs."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            sign = torch.where(torch.rand(module.num_features, generator=gen) < 0.2, -1.0, 1.0)
            scale = torch.empty(module.num_features).uniform_(0.5, 1.5, generator=gen)
            module.weight.copy_(sign * scale)
            module.bias.uniform_(-0.2, 0.2, generator=gen)
            module.running_mean.uniform_(-0.2, 0.2, generator=gen)
            module.running_var.uniform_(0.5, 2.0, generator=gen)


@torch.no_grad()
def pruned_tiny(arch: str, sparsity: float = 0.8) -> tuple[torch.nn.Module, dict]:
    """Tiny detector, random BN stats, conv/linear weights pruned at random (by multiplication,
    which leaves -0.0 for negative weights), final predictors dense."""
    torch.manual_seed(0)
    model = build_model(arch, "tiny", 3, min_size=SIZE, max_size=SIZE).eval()
    model.roi_heads.score_thresh = 0.0  # keep detections on a random-init model
    gen = torch.Generator().manual_seed(1)
    _randomise_bn(model, gen)
    mask = {}
    for name, param in model.named_parameters():
        final = any(k in name for k in ("mask_fcn_logits", "keypoint_predictor"))
        if param.ndim > 1 and not final:
            mask[name] = torch.rand(param.shape, generator=gen) >= sparsity
            param.mul_(mask[name])
    return model, mask
