"""Dense and effective multiply-accumulates (MACs) of a detector, per layer and in total.

MACs are counted with forward hooks on one real forward pass in eval mode, so every call of a
conv / linear / transposed-conv module is counted with the shapes it actually saw (the RoI heads
run once per image on however many RoIs reach them):

- conv: output elements x (in_channels / groups) x kh x kw
- transposed conv: input elements x (out_channels / groups) x kh x kw
- linear: (input elements / in_features) x in_features x out_features

A layer's effective MACs are its dense MACs times its weight density: the kept fraction of its
mask when a mask is given (layers absent from the mask are not pruned and keep density 1),
otherwise the fraction of non-zero weights. Totals are exact `Fraction`s under `*_exact`.
Biases, norms, pooling, RoIAlign and upsampling are not counted (as in fvcore's conv/linear).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, Iterator, Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)

COUNTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d, nn.Linear)


def layer_call_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one call of a conv / transposed conv / linear module (bias not counted)."""
    if isinstance(module, nn.Linear):
        rows = inp.numel() // module.in_features
        return rows * module.in_features * module.out_features
    kernel = 1
    for size in module.kernel_size:
        kernel *= int(size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return inp.numel() * (module.out_channels // module.groups) * kernel
    return out.numel() * (module.in_channels // module.groups) * kernel


def _layer_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "deconv"
    return "conv"


@contextmanager
def heads_at_capacity(model: nn.Module) -> Iterator[None]:
    """Temporarily set an R-CNN's box score threshold to 0 so its RoI heads run at capacity.

    With threshold 0 the box head sees the RPN's `post_nms_top_n` proposals and the mask /
    keypoint heads see `detections_per_img` boxes, whatever the weights, so MAC counts of
    untrained and trained models at the same image size are comparable.
    """
    roi_heads = getattr(model, "roi_heads", None)
    old = getattr(roi_heads, "score_thresh", None)
    if roi_heads is not None and old is not None:
        roi_heads.score_thresh = 0.0
    try:
        yield
    finally:
        if roi_heads is not None and old is not None:
            roi_heads.score_thresh = old


def example_images(image_size: int | tuple[int, int], batch: int = 1,
                   seed: int = 0) -> list[torch.Tensor]:
    """Deterministic images (3 x H x W, values in [0, 1]) for counting and tracing."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, height, width, generator=generator) for _ in range(batch)]


def _run_with_hooks(model: nn.Module, images: list[torch.Tensor]) -> dict[str, dict[str, Any]]:
    layers: dict[str, dict[str, Any]] = {}
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            entry = layers.setdefault(name, {"type": _layer_kind(module), "calls": 0, "dense": 0})
            entry["calls"] += 1
            entry["dense"] += layer_call_macs(module, args[0], out)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, COUNTED_TYPES):
            handles.append(module.register_forward_hook(make_hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), heads_at_capacity(model):
            if _takes_image_list(model):
                model(images)
            else:
                model(torch.stack(images))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return layers


def _takes_image_list(model: nn.Module) -> bool:
    return hasattr(model, "transform") and hasattr(model, "backbone")


def _density(name: str, module: nn.Module,
             mask: Mapping[str, torch.Tensor] | None) -> tuple[int, int, bool]:
    """(kept weights, total weights, pruned?) for a layer's weight."""
    key = f"{name}.weight" if name else "weight"
    weight = module.weight
    if mask is not None:
        if key not in mask:
            return weight.numel(), weight.numel(), False
        kept = mask[key]
        if tuple(kept.shape) != tuple(weight.shape):
            raise ValueError(f"mask[{key!r}] has shape {tuple(kept.shape)}, "
                             f"weight has {tuple(weight.shape)}")
        return int(kept.bool().sum()), weight.numel(), True
    nonzero = int(torch.count_nonzero(weight.detach()))
    return nonzero, weight.numel(), nonzero < weight.numel()


def count_macs(model: nn.Module, image_size: int | tuple[int, int],
               mask: Mapping[str, torch.Tensor] | None = None,
               batch: int = 1) -> dict[str, Any]:
    """Count dense and effective MACs of `model` on `batch` images of `image_size` (H, W).

    For an R-CNN the image goes through the model's own transform (resize to min_size /
    max_size), and the RoI heads run at capacity (see `heads_at_capacity`).

    Returns {"image_size", "batch", "layers": {name: {type, calls, dense, kept, weights,
    density, effective, pruned}}, "dense", "effective", "non_prunable", "prunable_dense",
    "effective_exact" (Fraction), "by_type": {conv|linear|deconv: dense}}. A layer is "pruned"
    when it is in `mask` (or, without a mask, when it holds zeros); `non_prunable` is the
    dense MACs of the other layers. The totals are logged at INFO with a mask, at DEBUG without.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    layers = _run_with_hooks(model, example_images(size, batch))
    modules = dict(model.named_modules())
    total_effective = Fraction(0)
    non_prunable = 0
    by_type: dict[str, int] = {}
    for name, entry in layers.items():
        kept, weights, pruned = _density(name, modules[name], mask)
        effective = Fraction(entry["dense"] * kept, weights)
        entry.update(kept=kept, weights=weights, density=kept / weights, pruned=pruned,
                     effective=float(effective), effective_exact=effective)
        total_effective += effective
        non_prunable += 0 if pruned else entry["dense"]
        by_type[entry["type"]] = by_type.get(entry["type"], 0) + entry["dense"]
    dense = sum(entry["dense"] for entry in layers.values())
    # one console line per run: the ticket's count (with its mask); a counting pass without a
    # mask (the report's per-layer MACs) logs at debug
    log.log(logging.INFO if mask is not None else logging.DEBUG,
            "MACs at %sx%s: dense %.3g, effective %.3g", size[0], size[1], dense,
            float(total_effective))
    return {"image_size": list(size), "batch": batch, "layers": layers, "dense": dense,
            "effective": float(total_effective), "effective_exact": total_effective,
            "non_prunable": non_prunable, "prunable_dense": dense - non_prunable,
            "by_type": by_type}


def macs_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of `count_macs`'s result (drops the exact Fractions)."""
    layers = {name: {k: v for k, v in entry.items() if k != "effective_exact"}
              for name, entry in result["layers"].items()}
    summary = {k: v for k, v in result.items() if k not in ("layers", "effective_exact")}
    summary["effective_fraction"] = (result["effective"] / result["dense"]
                                     if result["dense"] else 1.0)
    summary["layers"] = layers
    return summary
