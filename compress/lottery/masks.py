"""Pruning masks: the pure magnitude-pruning function and everything that holds a mask on a model.

A mask maps a parameter name (exactly as in `model.state_dict()`) to a bool tensor of the same
shape; True = kept. Masks only shrink: `magnitude_prune` returns a subset of the mask it is given.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, NamedTuple

import torch
from torch import Tensor, nn

from compress.core.atomic import torch_save
from compress.core.checkpoint import read_torch_file
from compress.core.errors import ModelFileError

Mask = dict[str, Tensor]
RANKINGS = ("global", "layerwise")  # one ranking over every tensor, or one per tensor
MASK_TYPES = ("unstructured", "block4")  # what is pruned: single weights, or blocks of 4 inputs
BLOCK = 4


class Ranking(NamedTuple):
    """How `magnitude_prune` ranks: over every tensor (`global`) or per tensor (`layerwise`),
    single weights (`unstructured`) or blocks of 4 consecutive input channels (`block4`)."""

    distribution: str = "global"
    mask_type: str = "unstructured"


def as_ranking(distribution: str | Ranking) -> Ranking:
    """A Ranking from itself or a distribution name (single weights); checked."""
    ranking = Ranking(distribution) if isinstance(distribution, str) else Ranking(*distribution)
    if ranking.distribution not in RANKINGS:
        raise ValueError(f"distribution '{ranking.distribution}' not in {RANKINGS}")
    if ranking.mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type '{ranking.mask_type}' not in {MASK_TYPES}")
    return ranking


def _check_prune_args(weights: Mapping[str, Tensor], mask: Mapping[str, Tensor],
                      fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"prune fraction {fraction} must be in [0, 1)")
    for name, kept in mask.items():
        if name not in weights:
            raise ValueError(f"mask names '{name}' but the weights do not hold it")
        if weights[name].shape != kept.shape:
            raise ValueError(f"{name}: weight shape {tuple(weights[name].shape)} != mask shape "
                             f"{tuple(kept.shape)}")
        if not torch.isfinite(weights[name]).all():
            raise ValueError(f"{name}: weights hold NaN/inf; training diverged, cannot prune")


def _inputs_last(t: Tensor) -> Tensor:
    """The input channels (dim 1) moved last, as SparseML's FourBlockMaskCreator lays a weight out:
    [out, in, kh, kw] -> [out, kh, kw, in] (a 1-D or 2-D tensor as it is)."""
    return t.movedim(1, -1) if t.dim() > 2 else t


class Blocks(NamedTuple):
    """A tensor's 4-blocks, in SparseML's order (output channel, kernel position, input block)."""

    scores: Tensor  # mean |w| per block (a partial last block: the mean of the weights it has)
    ids: Tensor  # the block of each entry, in the tensor's flat order
    sizes: Tensor  # weights per block: 4, or `in % 4` for the last block of a row
    kept: Tensor  # per block: kept (all its weights kept) or pruned (none)


def block_scores(magnitude: Tensor) -> Tensor:
    """Mean |w| of each block of 4 consecutive input channels, with SparseML's arithmetic
    (FourBlockMaskCreator.group_tensor: a partial last block is padded with the mean of the
    channels it has, then every block of 4 is averaged), so the ranking equals SparseML's."""
    t = _inputs_last(magnitude)
    rest = t.shape[-1] % BLOCK
    if rest:
        pad = t[..., -rest:].mean(-1, keepdim=True).expand(*t.shape[:-1], BLOCK - rest)
        t = torch.cat([t, pad], dim=-1)
    return t.reshape(-1, BLOCK).mean(1)


def blocks_of(weight: Tensor, kept: Tensor, name: str = "tensor") -> Blocks:
    """The 4-blocks of `weight` under the bool mask `kept` (same shape), which must be
    block-structured: every block all kept or all pruned."""
    flat_index = _inputs_last(torch.arange(weight.numel()).reshape(weight.shape))
    channels = flat_index.shape[-1] if flat_index.dim() else 1
    per_row = -(-channels // BLOCK)
    rows = flat_index.numel() // max(channels, 1)
    view_ids = (torch.arange(rows).unsqueeze(1) * per_row
                + torch.arange(channels).unsqueeze(0) // BLOCK).reshape(-1)
    ids = torch.empty(weight.numel(), dtype=torch.long)
    ids[flat_index.reshape(-1)] = view_ids
    ids = ids.to(kept.device)
    sizes = torch.bincount(ids, minlength=rows * per_row)
    kept_count = torch.bincount(ids, weights=kept.reshape(-1).double(),
                                minlength=rows * per_row).long()
    if bool(((kept_count != 0) & (kept_count != sizes)).any()):
        raise ValueError(f"{name}: the mask is not 4-block structured (a block is partly kept); "
                         "block4 prunes only from a dense or block4 mask")
    magnitude = weight.detach().abs().to(kept.device)
    return Blocks(block_scores(magnitude), ids, sizes, kept_count == sizes)


def block_count(sizes_in_order: Tensor, weights_count: int) -> int:
    """How many blocks, taken in ranking order, remove the nearest to `weights_count` weights;
    a tie takes the even count (with whole blocks of 4: Python's round(weights_count / 4))."""
    reach = torch.cat([sizes_in_order.new_zeros(1), sizes_in_order.cumsum(0)])
    above = int(torch.searchsorted(reach, torch.tensor(weights_count, dtype=reach.dtype,
                                                         device=reach.device)))
    if above >= len(reach):
        return len(reach) - 1
    if above == 0:
        return 0
    over, under = int(reach[above]) - weights_count, weights_count - int(reach[above - 1])
    if over != under:
        return above if over < under else above - 1
    return above if above % 2 == 0 else above - 1


def block_totals(kept: Tensor) -> tuple[int, int]:
    """(kept blocks, blocks) of a 4-block structured mask."""
    blocks = blocks_of(kept.float(), kept.bool())
    return int(blocks.kept.sum()), len(blocks.kept)


def _block_mask(blocks: Blocks, count: int) -> Tensor:
    """The per-entry mask (flat) after dropping the blocks nearest to `count` weights."""
    return _prune_flat(blocks.scores, blocks.kept, count, blocks.sizes)[blocks.ids]


def _joined(parts: list[Blocks]) -> Blocks:
    """Several tensors' blocks as one (ids offset), for one global ranking."""
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part.sizes))
    return Blocks(torch.cat([p.scores for p in parts]),
                  torch.cat([p.ids + off for p, off in zip(parts, offsets)]),
                  torch.cat([p.sizes for p in parts]), torch.cat([p.kept for p in parts]))


def _prune_flat(magnitude: Tensor, kept: Tensor, count: int, sizes: Tensor | None = None) -> Tensor:
    """Drop the smallest kept entries of a flat tensor, ties to the lower index: `count` of them,
    or, given `sizes` (the weights each entry stands for: blocks), as many as come nearest to
    removing `count` weights (`block_count`)."""
    new = kept.clone()
    if count <= 0:
        return new
    positions = kept.nonzero().squeeze(1)
    order = positions[torch.sort(magnitude[positions], stable=True).indices]
    if sizes is not None:
        count = block_count(sizes[order], count)
    new[order[:count]] = False
    return new


def magnitude_prune(weights: Mapping[str, Tensor], mask: Mapping[str, Tensor], fraction: float,
                    distribution: str | Ranking = "global") -> Mask:
    """Remove `fraction` of the still-kept weights by smallest |w| and return the new mask.

    `distribution` is a `Ranking` or its distribution name (single weights).
    global: one ranking over all tensors of `mask`, exactly round(fraction * kept_total) removed.
    layerwise: per tensor, exactly round(fraction * kept_tensor) removed.
    `round` is Python's (half to even, as SparseML). Weights already pruned are never
    considered, whatever their value. Ties in |w| are broken by position (mask order, then flat
    index: the earlier is pruned first), so counts are exact and results deterministic.
    block4: the same weight count, taken in whole blocks of 4 consecutive input channels ranked
    by their mean |w| (SparseML's FourBlockMaskCreator), as many blocks as come nearest to it
    (`block_count`); every block ends all kept or all pruned.
    """
    ranking = as_ranking(distribution)
    _check_prune_args(weights, mask, fraction)
    names = list(mask)
    if ranking.mask_type == "block4":
        return _block_prune(weights, mask, fraction, ranking.distribution)
    if ranking.distribution == "layerwise":
        out = {}
        for name in names:
            kept = mask[name].reshape(-1).bool()
            count = round(fraction * int(kept.sum()))
            magnitude = weights[name].detach().reshape(-1).abs().to(kept.device)
            out[name] = _prune_flat(magnitude, kept, count).reshape(mask[name].shape)
        return out
    device = next(iter(mask.values())).device if names else torch.device("cpu")
    kept = torch.cat([mask[n].reshape(-1).bool().to(device) for n in names]) if names else \
        torch.zeros(0, dtype=torch.bool)
    dtype = _ranking_dtype(weights, names)
    magnitude = torch.cat([weights[n].detach().reshape(-1).abs().to(device, dtype)
                           for n in names]) if names else torch.zeros(0)
    flat = _prune_flat(magnitude, kept, round(fraction * int(kept.sum())))
    return _split(flat, mask)


def _ranking_dtype(weights: Mapping[str, Tensor], names: list[str]) -> torch.dtype:
    return torch.float64 if any(weights[n].dtype == torch.float64 for n in names) \
        else torch.float32  # float32 holds fp16/bf16 magnitudes exactly


def _split(flat: Tensor, mask: Mapping[str, Tensor]) -> Mask:
    """A flat mask over every tensor of `mask` (in its order) back into {name: shaped mask}."""
    sizes = [m.numel() for m in mask.values()]
    return {n: part.reshape(m.shape).to(m.device)
            for (n, m), part in zip(mask.items(), torch.split(flat, sizes))}


def _block_prune(weights: Mapping[str, Tensor], mask: Mapping[str, Tensor], fraction: float,
                 distribution: str) -> Mask:
    names = list(mask)
    device = next(iter(mask.values())).device if names else torch.device("cpu")
    dtype = _ranking_dtype(weights, names)
    parts = []
    for name in names:
        part = blocks_of(weights[name].to(device), mask[name].bool().to(device), name)
        parts.append(part._replace(scores=part.scores.to(dtype)))
    if distribution == "layerwise":
        return {n: _block_mask(p, round(fraction * int(mask[n].sum()))).reshape(mask[n].shape)
                .to(mask[n].device) for n, p in zip(names, parts)}
    if not names:
        return {}
    kept = sum(int(mask[n].sum()) for n in names)
    return _split(_block_mask(_joined(parts), round(fraction * kept)), mask)


def prune_to_counts(weights: Mapping[str, Tensor], mask: Mapping[str, Tensor],
                    zeros: Mapping[str, int]) -> Mask:
    """Per tensor, remove the smallest kept |w| until it holds exactly `zeros[name]` zeros.

    A count below the tensor's current zeros or above its size is an error (masks only shrink).
    """
    out = {}
    for name, kept_mask in mask.items():
        kept = kept_mask.reshape(-1).bool()
        count = int(zeros[name]) - (kept.numel() - int(kept.sum()))
        if count < 0 or int(zeros[name]) > kept.numel():
            raise ValueError(f"{name}: {zeros[name]} zeros asked, it holds {kept.numel() - int(kept.sum())}"
                             f" of {kept.numel()}")
        magnitude = weights[name].detach().reshape(-1).abs().to(kept.device)
        out[name] = _prune_flat(magnitude, kept, count).reshape(kept_mask.shape)
    return out


def dense_mask(model: nn.Module, param_names: list[str]) -> Mask:
    """All-True mask over `param_names` (round 0)."""
    state = model.state_dict()
    _check_names(state, param_names, "model")
    return {n: torch.ones_like(state[n], dtype=torch.bool, device="cpu") for n in param_names}


def mask_from_model(model: nn.Module, param_names: list[str]) -> Mask:
    """Mask read from the weights' zeros: kept = weight != 0."""
    state = model.state_dict()
    _check_names(state, param_names, "model")
    return {n: (state[n] != 0).cpu() for n in param_names}


def _check_names(state: Mapping[str, Tensor], names, where: str,
                 shapes: Mapping[str, torch.Size] | None = None) -> None:
    for name in names:
        if name not in state:
            raise ModelFileError(f"{where}: parameter '{name}' not in the model's state dict")
        if shapes is not None and tuple(state[name].shape) != tuple(shapes[name]):
            raise ModelFileError(f"{where}: '{name}' has shape {tuple(shapes[name])}, the model "
                                 f"has {tuple(state[name].shape)}")


def _named_tensors(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_parameters())


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, Tensor]) -> None:
    """Zero the pruned entries of the model's parameters in place (exact zeros)."""
    params = _named_tensors(model)
    _check_names(params, mask, "mask", {n: m.shape for n, m in mask.items()})
    for name, kept in mask.items():
        params[name].masked_fill_(~kept.to(params[name].device, torch.bool), 0.0)


class MaskHolder:
    """Keeps pruned weights at exactly zero during training.

    After each gradient is accumulated, a hook multiplies it in place by the 0/1 mask (so weight
    decay, momentum and gradient clipping never see a pruned entry), and `after_step()` (call it
    after every optimizer step) multiplies the weights by the mask with one `torch._foreach_mul_`.
    Multiplying by a float mask is ~7x faster on CPU than `masked_fill_` with a bool mask
    (benchmarks/bench_mask_overhead.py). `remove()` takes the hooks off.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, Tensor]):
        params = _named_tensors(model)
        _check_names(params, mask, "mask", {n: m.shape for n, m in mask.items()})
        self._params = {n: params[n] for n in mask}
        self._mask = {n: m.to(params[n].device, torch.bool) for n, m in mask.items()}
        self._keep: dict[str, Tensor] = {}
        self._sync_devices()
        self._handles: list = []
        for name, param in self._params.items():
            self._handles.append(param.register_post_accumulate_grad_hook(self._grad_hook(name)))
        apply_mask(model, self._mask)

    def _sync_devices(self) -> None:
        """(Re)build the 0/1 multipliers where a parameter moved (or on first use)."""
        for name, param in self._params.items():
            keep = self._keep.get(name)
            if keep is None or keep.device != param.device or keep.dtype != param.dtype:
                self._mask[name] = self._mask[name].to(param.device)
                self._keep[name] = self._mask[name].to(param.dtype)

    def _grad_hook(self, name: str) -> Callable[[Tensor], None]:
        def hook(param: Tensor) -> None:
            keep = self._keep[name]
            if keep.device != param.grad.device or keep.dtype != param.grad.dtype:
                keep = keep.to(param.grad.device, param.grad.dtype)
            param.grad.mul_(keep)
        return hook

    @property
    def mask(self) -> Mask:
        return self._mask

    @torch.no_grad()
    def after_step(self, *_args, **_kwargs) -> None:
        self._sync_devices()
        torch._foreach_mul_(list(self._params.values()), list(self._keep.values()))

    def check(self, model: nn.Module) -> int:
        """Number of pruned entries that are not exactly zero (0 when the mask holds)."""
        params = _named_tensors(model)
        return int(sum(int((params[n].detach()[~m.to(params[n].device)] != 0).sum())
                       for n, m in self._mask.items()))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _counts(tensors: Mapping[str, Tensor]) -> dict[str, float]:
    numel = sum(t.numel() for t in tensors.values())
    zeros = sum(int((t.detach() == 0).sum()) for t in tensors.values())
    return {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0}


def sparsity_report(model: nn.Module, mask: Mapping[str, Tensor]) -> dict:
    """Measured zeros: per prunable tensor, over the prunable tensors, over all parameters.

    {"layers": {name: {numel, zeros, sparsity}}, "prunable": {...}, "network": {...}}; counts
    come from the weights themselves (== 0), so they show what an export would see.
    """
    params = _named_tensors(model)
    _check_names(params, mask, "mask")
    prunable = {n: params[n] for n in mask}
    return {"layers": {n: _counts({n: t}) for n, t in prunable.items()},
            "prunable": _counts(prunable), "network": _counts(params)}


def mask_iou(a: Mapping[str, Tensor], b: Mapping[str, Tensor], of: str = "pruned") -> float:
    """Intersection over union of two masks' pruned sets (`of="pruned"`, the zeros) or kept sets.

    Early-bird comparisons use the pruned sets: at low sparsity the kept sets overlap almost
    fully whatever the masks, so their IoU says little. Both sets empty -> 1.0.
    """
    if set(a) != set(b):
        raise ValueError(f"masks cover different tensors: {sorted(set(a) ^ set(b))[:3]}")
    if of not in ("pruned", "kept"):
        raise ValueError(f"of='{of}' not in ('pruned', 'kept')")
    inter = union = 0
    for name in a:
        x, y = a[name].bool().cpu(), b[name].bool().cpu()
        if of == "pruned":
            x, y = ~x, ~y
        inter += int((x & y).sum())
        union += int((x | y).sum())
    return inter / union if union else 1.0


def is_nested(outer: Mapping[str, Tensor], inner: Mapping[str, Tensor]) -> bool:
    """True when every weight kept by `inner` (the later, sparser mask) is kept by `outer`."""
    if set(outer) != set(inner):
        return False
    return all(not bool((inner[n].bool().cpu() & ~outer[n].bool().cpu()).any()) for n in inner)


def rewind(model: nn.Module, rewind_state_dict: Mapping[str, Tensor],
           mask: Mapping[str, Tensor]) -> None:
    """Load the rewind-point weights and buffers (all of them), then zero the pruned ones."""
    try:
        model.load_state_dict(rewind_state_dict, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(f"rewind state does not fit the model: {first}") from err
    apply_mask(model, mask)


def save_mask(path: str | os.PathLike, mask: Mapping[str, Tensor]) -> None:
    """Atomically save a mask as {name: bool tensor on CPU}."""
    torch_save(path, {n: m.detach().bool().cpu() for n, m in mask.items()})


def load_mask(path: str | os.PathLike, model: nn.Module | None = None) -> Mask:
    """Load a mask (weights_only) and, given a model, check every name and shape against it."""
    data = read_torch_file(path)  # weights_only, one-line errors
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) and v.dtype == torch.bool
            for k, v in data.items()):
        raise ModelFileError(f"{path}: a mask must map parameter names to bool tensors")
    if model is not None:
        _check_names(model.state_dict(), data, str(path), {n: m.shape for n, m in data.items()})
    return data


def early_bird_iou(snapshot_weights: Mapping[str, Tensor], final_weights: Mapping[str, Tensor],
                   mask: Mapping[str, Tensor], fraction: float, distribution: str | Ranking) -> float:
    """Pruned-set IoU between the prune of `mask` on mid-training and on final weights."""
    early = magnitude_prune(snapshot_weights, mask, fraction, distribution)
    final = magnitude_prune(final_weights, mask, fraction, distribution)
    return mask_iou(early, final, of="pruned")
