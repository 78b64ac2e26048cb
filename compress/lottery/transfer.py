"""Ticket transfer (the paper's Appendix A): Mask Transfer and Transfer Ticket.

- `mask_transfer`: keep exactly the top-k |w| of the *source* (for example ImageNet) weights of the
  given layers, load the source values, zero the rest; the caller holds the mask while training.
- `transfer_ticket`: copy a ticket's mask and values (from another run, task or a classification
  ResNet) into the matching layers of a model, by name and shape.

Names are mapped source -> model: exact name first, then `backbone.body.` + name (a
classification ResNet's `layer1.0.conv1.weight` -> `backbone.body.layer1.0.conv1.weight`), then
without a `module.` (DataParallel) prefix. `name_map` ({source prefix: model prefix}) overrides.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from compress.core.checkpoint import load_checkpoint, state_dict_from_file
from compress.core.checks_names import tag
from compress.core.errors import ModelFileError
from compress.core.folders import RoundFolder, RunFolder
from compress.lottery.masks import Mask, apply_mask, dense_mask, load_mask, magnitude_prune

log = logging.getLogger(__name__)

BODY_PREFIX = "backbone.body."
# mask transfer warns (check `partial_transfer`) when the model takes less of the source's weights
# (a classification ResNet's `fc`, 4-8% of it, is expected to stay behind)
SOURCE_MATCH_LIMIT = 0.9


def load_source(path: str | os.PathLike) -> tuple[dict[str, Tensor], Mask | None]:
    """(state dict, mask or None) from a weights file, a checkpoint ({"model": ...}) or a ticket
    ({"model": ..., "mask": ...}); always `weights_only`."""
    data = load_checkpoint(path)  # weights_only, checksum when present, one-line errors
    mask = data.get("mask") if isinstance(data.get("mask"), dict) else None
    for key in ("model", "state_dict"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    if not state:
        raise ModelFileError(f"{path}: holds no tensors under 'model', 'state_dict' or the top level")
    return state, mask


def map_name(name: str, targets: Mapping[str, Any], name_map: Mapping[str, str] | None = None
             ) -> str | None:
    """The name in `targets` that source tensor `name` corresponds to, or None."""
    if name_map:
        for src, dst in name_map.items():
            if name.startswith(src) and dst + name[len(src):] in targets:
                return dst + name[len(src):]
        return None
    bare = name[len("module."):] if name.startswith("module.") else name
    for candidate in (name, BODY_PREFIX + name, bare, BODY_PREFIX + bare):
        if candidate in targets:
            return candidate
    return None


def _source_for(param_names: list[str], source: Mapping[str, Tensor],
                model_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Model name -> source tensor for every name in `param_names` (all must be found)."""
    by_model = {map_name(n, model_state): v for n, v in source.items()}
    out = {}
    for name in param_names:
        if name not in by_model:
            raise ModelFileError(f"mask transfer: source weights have no tensor for '{name}' "
                                 f"(looked for it and for it without '{BODY_PREFIX}')")
        if tuple(by_model[name].shape) != tuple(model_state[name].shape):
            raise ModelFileError(f"mask transfer: '{name}' has shape {tuple(by_model[name].shape)} "
                                 f"in the source, {tuple(model_state[name].shape)} in the model")
        out[name] = by_model[name]
    return out


@torch.no_grad()
def _copy_matching(model: nn.Module, source: Mapping[str, Tensor],
                   name_map: Mapping[str, str] | None = None) -> list[str]:
    """Copy every source tensor whose mapped name and shape fit the model; return model names."""
    state = model.state_dict()
    copied = []
    for name, value in source.items():
        target = map_name(name, state, name_map)
        if target is not None and tuple(state[target].shape) == tuple(value.shape):
            state[target].copy_(value.to(state[target].device, state[target].dtype))
            copied.append(target)
    return copied


def _numel(tensors: Mapping[str, Tensor]) -> int:
    return sum(int(t.numel()) for t in tensors.values())


def coverage(matched: Mapping[str, Tensor], total: Mapping[str, Tensor], what: str) -> str:
    """"5 of 62 masked tensors (0.01M of 11.17M weights) matched the model"."""
    return (f"{len(matched)} of {len(total)} {what} tensors ({_numel(matched) / 1e6:.2f}M of "
            f"{_numel(total) / 1e6:.2f}M weights) matched the model by name and shape")


def mask_transfer(model: nn.Module, source_state_dict: Mapping[str, Tensor], param_names: list[str],
                  sparsity: float, distribution: str = "global") -> Mask:
    """Keep the top-k |w| of the source weights of `param_names`, load the source, zero the rest.

    Exactly round(sparsity * numel) weights are pruned (global: over all of `param_names`;
    layerwise: per tensor). All source tensors that match the model by name and shape (convs,
    norms, running stats) are loaded. Returns the mask; hold it with `MaskHolder` while training.
    """
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"mask transfer sparsity {sparsity} must be in (0, 1)")
    sources = _source_for(param_names, source_state_dict, model.state_dict())
    mask = magnitude_prune(sources, dense_mask(model, param_names), sparsity, distribution)
    copied = _copy_matching(model, source_state_dict)
    log.info("mask transfer: loaded %d source tensors, pruned %d tensors to %.4f",
                 len(copied), len(mask), sparsity)
    state, taken = model.state_dict(), set(copied)
    loaded = {n: v for n, v in source_state_dict.items() if map_name(n, state) in taken}
    if _numel(loaded) < SOURCE_MATCH_LIMIT * _numel(source_state_dict):
        log.warning("mask transfer: %s; the rest of the source is dropped (first: %s)",
                    coverage(loaded, source_state_dict, "source"),
                    ", ".join(n for n in source_state_dict if n not in loaded)[:200],
                    extra=tag("partial_transfer"))
    apply_mask(model, mask)
    return mask


def transfer_ticket(model: nn.Module, ticket_state_dict: Mapping[str, Tensor],
                    ticket_mask: Mapping[str, Tensor], name_map: Mapping[str, str] | None = None
                    ) -> tuple[Mask, list[str]]:
    """Apply a ticket's mask and values to the model's matching layers.

    Every ticket tensor that matches a model tensor by (mapped) name and shape is copied (so a
    classification ticket brings its BatchNorm statistics; its `fc` has no match); the mask of
    each matched masked layer is applied. Returns (mask in model names, matched model names);
    unmatched masked layers are logged. No matched masked layer raises ModelFileError.
    """
    state = model.state_dict()
    mask: Mask = {}
    unmatched = []
    for name, kept in ticket_mask.items():
        target = map_name(name, state, name_map)
        if target is None or tuple(state[target].shape) != tuple(kept.shape) \
                or name not in ticket_state_dict:
            unmatched.append(name)
            continue
        mask[target] = kept.bool().cpu()
    if not mask:
        raise ModelFileError(f"transfer ticket: none of the ticket's {len(ticket_mask)} masked "
                             f"layers matches the model by name and shape (first: "
                             f"{next(iter(ticket_mask), '-')}); pass a name_map")
    if unmatched:
        kept = {n: ticket_mask[n] for n in ticket_mask if n not in unmatched}
        log.warning("transfer ticket: %s; the rest of the ticket is dropped (first unmatched: %s)",
                    coverage(kept, ticket_mask, "masked"), ", ".join(unmatched[:5]),
                    extra=tag("partial_transfer"))
    _copy_matching(model, ticket_state_dict, name_map)
    apply_mask(model, mask)
    matched = [n for n in state if n in mask]
    return {n: mask[n] for n in matched}, matched


RANDOM_INIT = "random-init:"


def source_weights(source: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Mask Transfer's source: a local weights file, or `random-init:<seed>` (the model's own
    seeded initialisation, a stand-in for pretrained weights when nothing can be downloaded)."""
    if source.startswith(RANDOM_INIT):
        seed = source[len(RANDOM_INIT):]
        if not seed.isdigit():
            raise ModelFileError(f"'{source}': write random-init:<integer seed>", file="lottery.source")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        generator = torch.Generator().manual_seed(int(seed))
        for name, value in state.items():
            if value.dim() > 1 and value.is_floating_point():
                state[name] = torch.randn(value.shape, generator=generator) * value.std()
        return state
    return state_dict_from_file(source)


def load_ticket_parts(path: Path) -> tuple[dict[str, torch.Tensor], Mask]:
    """(state dict, mask) of a ticket.pt, a run folder, or a round checkpoint with mask.pt beside it."""

    if path.is_dir():
        path = RunFolder(path).ticket
    state, mask = load_source(path)
    if mask is not None:
        return state, mask
    beside = RoundFolder(path.parent).mask
    if beside.is_file():
        return state, load_mask(beside)
    raise ModelFileError("not a ticket: expected a dict with 'model' and 'mask' (ticket.pt) or a "
                         "checkpoint with mask.pt beside it", file=str(path))
