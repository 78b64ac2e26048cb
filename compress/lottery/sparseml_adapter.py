"""The one module that imports SparseML (lazily, inside functions).

Facts on this stack (sparseml 1.8.0, torch 2.14):
- One-shot pruning: a `!GlobalMagnitudePruningModifier` / `!MagnitudePruningModifier` with
  `start_epoch: 0.0, end_epoch: 1.0` (start == end divides by zero) applied with
  `ScheduledModifierManager.apply(model)`: `apply` initialises every modifier at epoch = inf
  (a one-shot call computes the final sparsity at once) and, with finalize=True, writes the
  masked weights and removes the hooks. The masks are then only in the zeros of the weights.
- After finalize a plain optimizer step regrows pruned weights: hold them with
  `!ConstantPruningModifier` (it takes its mask from the zeros) or `compress.lottery.masks.MaskHolder`.
- `final_sparsity` is the tensor's (or, global, all tensors') total target sparsity, counting
  weights already at zero; SparseML masks exactly round(numel * target) entries. The adapter
  passes target = (zeros + to_prune) / numel so its counts equal `masks.magnitude_prune`.
- Without explicit loggers SparseML's default Python logger writes `sparse_logs/` into the
  current directory: every manager here gets a Python logger writing to `log_dir`.
- Gradual pruning: `manager.modify(model, optimizer, steps_per_epoch)` returns the stepper (a
  RecipeManagerStepWrapper round the optimizer) whose `step()` drives the modifiers
  (`ScheduledOptimizer` is deprecated).
"""
from __future__ import annotations

import difflib
import json
import logging
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from compress.core.errors import RecipeError
from compress.lottery.masks import (Mask, Ranking, apply_mask, as_ranking, block_totals, magnitude_prune,
                                    prune_to_counts)

log = logging.getLogger(__name__)

MODIFIER_FOR = {"global": "GlobalMagnitudePruningModifier", "layerwise": "MagnitudePruningModifier"}


@lru_cache(maxsize=1)
def _known_names() -> tuple[str, ...]:
    import yaml

    import sparseml.pytorch.sparsification  # noqa: F401 - registers the YAML tags

    prefix = "!pytorch."
    names = {tag[len(prefix):] for tag in yaml.SafeLoader.yaml_constructors
             if isinstance(tag, str) and tag.startswith(prefix)}
    return tuple(sorted(names))


def known_modifier_names() -> list[str]:
    """Names of every modifier SparseML's PyTorch recipes accept (`!Name` tags)."""
    return list(_known_names())


def validate_modifier_tags(names: Iterable[str], *, file: str | None = None,
                           key: str = "modifiers") -> None:
    """Raise RecipeError (with a "did you mean") for a name that is not a SparseML modifier."""
    known = known_modifier_names()
    for name in names:
        bare = name.lstrip("!")
        if bare not in known:
            close = difflib.get_close_matches(bare, known, n=1, cutoff=0.6)
            hint = f" (did you mean '!{close[0]}'?)" if close else ""
            raise RecipeError(f"unknown SparseML modifier '!{bare}'{hint}; known: "
                              f"{', '.join(sorted(known)[:12])}, ...", file=file, key=key)


def _fmt(value: float) -> str:
    """A YAML float that round-trips exactly (repr keeps the decimal point: 0.0, 0.2)."""
    return repr(float(value))


def oneshot_prune_recipe(param_names: list[str], sparsity: float | Mapping[str, float],
                         distribution: str, *, init_sparsity: float | str = 0.0,
                         update_frequency: float = 1.0, mask_type: str = "unstructured") -> str:
    """SparseML recipe text that prunes `param_names` to `sparsity` in one step.

    `sparsity` is the final total sparsity: one float (global, or the same for every tensor), or
    per tensor {name: sparsity} (layerwise only). `init_sparsity` is the current sparsity (a float
    or "__FROM_PARAM__"). `mask_type` block4: SparseML's FourBlockMaskCreator, whose sparsity
    counts blocks of 4 input channels, not weights.
    """
    if distribution not in MODIFIER_FOR:
        raise ValueError(f"distribution '{distribution}' not in {sorted(MODIFIER_FOR)}")
    init = init_sparsity if isinstance(init_sparsity, str) else _fmt(init_sparsity)
    lines = ["modifiers:", f"  - !{MODIFIER_FOR[distribution]}",
             f"    init_sparsity: {init}"]
    if isinstance(sparsity, Mapping):
        if distribution != "layerwise":
            raise ValueError("per-tensor sparsity needs distribution 'layerwise'")
        groups: dict[float, list[str]] = {}
        for name in param_names:
            groups.setdefault(float(sparsity[name]), []).append(name)
        lines.append("    final_sparsity:")
        lines += [f"      {_fmt(value)}: {json.dumps(names)}" for value, names in groups.items()]
        lines.append("    params: []")
    else:
        lines += [f"    final_sparsity: {_fmt(sparsity)}", f"    params: {json.dumps(param_names)}"]
    lines += ["    start_epoch: 0.0", "    end_epoch: 1.0",
              f"    update_frequency: {_fmt(update_frequency)}", "    inter_func: linear",
              "    leave_enabled: true", f"    mask_type: {mask_type}"]
    return "\n".join(lines) + "\n"


def constant_pruning_recipe(param_names: list[str], start_epoch: float = 0.0,
                            end_epoch: float = -1.0) -> str:
    """Recipe text holding the current zeros of `param_names` (end_epoch -1: to the end)."""
    return "\n".join(["modifiers:", "  - !ConstantPruningModifier",
                      f"    start_epoch: {_fmt(start_epoch)}", f"    end_epoch: {_fmt(end_epoch)}",
                      f"    params: {json.dumps(param_names)}"]) + "\n"


def sparseml_loggers(log_dir: str | os.PathLike) -> Any:
    """A SparseML LoggerManager whose only logger writes `log_dir/sparseml.log`."""
    from sparseml.pytorch.utils import LoggerManager, PythonLogger

    path = Path(log_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"compress.sparseml_log.{abs(hash(str(path)))}")
    log_file = str(path / "sparseml.log")
    if not any(getattr(h, "baseFilename", None) == log_file for h in logger.handlers):
        handler = logging.FileHandler(log_file, delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return LoggerManager([PythonLogger(logger=logger)])


def manager_from_yaml(source: str, variables: Mapping[str, Any] | None = None) -> Any:
    """`ScheduledModifierManager.from_yaml` on recipe text or a recipe file path (.yaml, or .md
    with YAML front matter), with `variables` overriding the file's own; errors -> RecipeError."""
    import yaml
    from sparseml.pytorch.optim import ScheduledModifierManager
    from sparseml.utils.restricted_eval import UnknownVariableException

    try:
        return ScheduledModifierManager.from_yaml(source, recipe_variables=dict(variables or {})
                                                  or None)
    except (ValueError, TypeError, KeyError, RuntimeError, AttributeError, OSError,
            yaml.YAMLError, UnknownVariableException) as err:
        raise RecipeError(f"SparseML rejected the modifiers: {err}", key="modifiers") from err


# Modifiers that only shape training (learning rate, epochs, weight decay): every method can run
# them on each round's training. Any other modifier (pruning, quantization, ...) needs `gradual`.
TRAINING_MODIFIERS = ("EpochRangeModifier", "LearningRateModifier", "LearningRateFunctionModifier",
                      "SetLearningRateModifier", "SetWeightDecayModifier")
LR_MODIFIERS = ("LearningRateModifier", "LearningRateFunctionModifier", "SetLearningRateModifier")


def modifier_names(source: str, variables: Mapping[str, Any] | None = None) -> list[str]:
    """The class name of every modifier a recipe (text or file path) holds, as SparseML loads it."""
    return [type(m).__name__ for m in manager_from_yaml(source, variables).iter_modifiers()]


def epoch_range_epochs(source: str, variables: Mapping[str, Any] | None = None) -> float | None:
    """The end epoch of the recipe's `!EpochRangeModifier`s (the training length it sets)."""
    ends = [float(m.end_epoch) for m in manager_from_yaml(source, variables).iter_modifiers()
            if type(m).__name__ == "EpochRangeModifier"]
    return max(ends) if ends else None


def _param_groups(modifier: Any) -> list[tuple[Any, Any]]:
    """(final sparsity, params) of a modifier: one pair, or one per entry of a per-sparsity dict."""
    final = getattr(modifier, "final_sparsity", None)
    return list(final.items()) if isinstance(final, Mapping) else [
        (final, getattr(modifier, "params", None))]


def pruning_targets(source: str, variables: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """What each pruning modifier of a recipe aims at: {params (names, `re:` patterns or
    "__ALL_PRUNABLE__"), target (final sparsity), end_epoch} (a per-sparsity dict: one each)."""
    return [{"params": params, "target": float(target), "end_epoch": float(m.end_epoch)}
            for m in manager_from_yaml(source, variables).iter_modifiers()
            for target, params in _param_groups(m) if target is not None]


def modifier_params(source: str, variables: Mapping[str, Any] | None = None) -> list[list[str]]:
    """The parameter names / `re:` patterns each modifier of a recipe selects, as SparseML loads
    them (variables and `eval()` applied; a per-sparsity mapping's lists joined)."""
    groups = [[p for _, g in _param_groups(m) for p in ([g] if isinstance(g, str) else g or [])]
              for m in manager_from_yaml(source, variables).iter_modifiers()]
    return [names for names in groups if names]


def all_prunable_params(model: nn.Module) -> list[str]:
    """The weights SparseML's `__ALL_PRUNABLE__` selects (every Linear / ConvNd / Embedding)."""
    from sparseml.pytorch.utils import get_prunable_layers

    return [f"{name}.weight" for name, _ in get_prunable_layers(model)]


def _pruned(kept: Tensor, mask_type: str) -> tuple[int, int]:
    """(pruned, all) of what SparseML's sparsity counts: weights, or (block4) blocks."""
    if mask_type == "block4":
        kept_blocks, blocks = block_totals(kept)
        return blocks - kept_blocks, blocks
    return int((~kept.bool()).sum()), kept.numel()


def _targets(mask: Mapping[str, Tensor], expected: Mapping[str, Tensor],
             ranking: Ranking) -> tuple[float | dict[str, float], float | str]:
    """(final_sparsity, init_sparsity) that make SparseML prune exactly the expected count (for
    block4 in blocks: SparseML masks round(blocks * target) of them, target = pruned / blocks)."""
    if ranking.distribution == "global":
        now = [_pruned(m, ranking.mask_type) for m in mask.values()]
        numel = sum(total for _, total in now)
        zeros_next = sum(_pruned(m, ranking.mask_type)[0] for m in expected.values())
        return zeros_next / numel, sum(zeros for zeros, _ in now) / numel
    pruned = {n: _pruned(m, ranking.mask_type) for n, m in expected.items()}
    return {n: zeros / total for n, (zeros, total) in pruned.items()}, "__FROM_PARAM__"


def _check_counts(new: Mask, expected: Mask, distribution: str) -> None:
    def count(m: Mask, names) -> int:
        return sum(int(m[n].sum()) for n in names)

    groups = [list(new)] if distribution == "global" else [[n] for n in new]
    for names in groups:
        got, want = count(new, names), count(expected, names)
        if got != want:
            raise RuntimeError(f"SparseML kept {got} weights of {names[0]}... where magnitude "
                               f"pruning keeps {want}")
    differ = sum(int((new[n] != expected[n]).sum()) for n in new)
    if differ:
        log.warning("SparseML and the pure pruner agree on counts but differ on %d entries "
                        "(ties in |w|)", differ)


def sparseml_prune(model: nn.Module, mask: Mapping[str, Tensor], fraction: float,
                   distribution: str | Ranking, log_dir: str | os.PathLike) -> Mask:
    """Prune `fraction` of the kept weights with a one-shot SparseML modifier; return the mask.

    The model's pruned weights are zeroed first (SparseML ranks zeros lowest), the modifier is
    applied, its masks are read (before finalize: exact even where a kept weight is 0.0) and
    ANDed with the old mask, then finalised. Counts are checked against `masks.magnitude_prune`
    on the same weights (RuntimeError if not equal). `distribution` is a `masks.Ranking` or its
    name; block4 gives the modifier `mask_type: block4` (SparseML's FourBlockMaskCreator).
    """
    ranking = as_ranking(distribution)
    apply_mask(model, mask)
    state = model.state_dict()
    expected = magnitude_prune({n: state[n] for n in mask}, mask, fraction, ranking)
    return _prune_to(model, mask, expected, ranking, log_dir)


def sparseml_prune_layers(model: nn.Module, mask: Mapping[str, Tensor],
                          zeros: Mapping[str, int], log_dir: str | os.PathLike) -> Mask:
    """Prune each tensor to `zeros[name]` zeros (a per-layer allocation, e.g. runtime-aware)
    with one SparseML `!MagnitudePruningModifier` holding per-tensor final sparsities; checked
    against `masks.prune_to_counts` like `sparseml_prune`."""
    apply_mask(model, mask)
    state = model.state_dict()
    expected = prune_to_counts({n: state[n] for n in mask}, mask, zeros)
    return _prune_to(model, mask, expected, Ranking("layerwise"), log_dir)


def _prune_to(model: nn.Module, mask: Mapping[str, Tensor], expected: Mask, ranking: Ranking,
              log_dir: str | os.PathLike) -> Mask:
    names = list(mask)
    final, init = _targets(mask, expected, ranking)
    if isinstance(final, dict):
        active = [n for n in names if not bool((expected[n] == mask[n].bool()).all())]
        final = {n: final[n] for n in active}
    else:
        active = names if final > init else []
    if not active:
        return {n: m.clone().bool().cpu() for n, m in expected.items()}
    _check_not_all(final)
    recipe = oneshot_prune_recipe(active, final, ranking.distribution, init_sparsity=init,
                                  mask_type=ranking.mask_type)
    manager = manager_from_yaml(recipe)
    manager.apply(model, epoch=math.inf, loggers=sparseml_loggers(log_dir), finalize=False)
    pruned = _modifier_masks(manager)
    manager.finalize(model)
    new = {n: (pruned[n] if n in pruned else mask[n].bool().cpu()) & mask[n].bool().cpu()
           for n in names}
    apply_mask(model, new)
    _check_counts(new, {n: t.cpu() for n, t in expected.items()}, ranking.distribution)
    return new


def _modifier_masks(manager: Any) -> Mask:
    """SparseML's own masks ({param name: bool}), read before `finalize` drops them."""
    suffix = ".sparsity_mask"
    out: Mask = {}
    for modifier in manager.iter_modifiers():
        for key, value in modifier.state_dict().items():
            if key.endswith(suffix):
                out[key[: -len(suffix)]] = value.detach().cpu() != 0
    return out


def _check_not_all(final: float | Mapping[str, float]) -> None:
    values = final.values() if isinstance(final, Mapping) else [final]
    if any(v >= 1.0 for v in values):
        raise ValueError("this prune would remove every remaining weight of a tensor; "
                         "lower the fraction or the number of rounds")


def gmp_manager(source: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                steps_per_epoch: int, *, log_dir: str | os.PathLike, start_iteration: int = 0,
                scaler: Any = None, variables: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """Start a SparseML recipe (text or file path: gradual pruning, learning rate, ...) for a
    training run.

    Returns (manager, stepper): call `stepper.step()` instead of `optimizer.step()` every
    iteration (it runs the modifiers), `manager.finalize(model)` at the end. With a GradScaler
    (`scaler`) SparseML wraps the scaler instead (`modify(wrap_optim=...)`): call
    `stepper.step(optimizer)` every iteration; the scaler may skip the optimizer step on inf
    gradients, the modifiers' step count still advances, so the schedule never shifts. The
    stepper starts at `start_iteration` (as an epoch fraction), so a resumed run continues the
    schedule where its checkpoint left it. Logs go to `log_dir/sparseml.log` (never to
    `sparse_logs/` in the CWD).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch {steps_per_epoch} must be >= 1")
    manager = manager_from_yaml(source, variables)
    stepper = manager.modify(model, optimizer, steps_per_epoch=steps_per_epoch, wrap_optim=scaler,
                             epoch=start_iteration / steps_per_epoch, loggers=sparseml_loggers(log_dir))
    return manager, stepper


def modifier_wrapper(source: str, steps_per_epoch: int, log_dir: str | os.PathLike,
                     variables: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """The training loop's optimizer wrapper (RoundPlan.optimizer_wrapper) for a run driven by
    SparseML modifiers: optimizer_wrapper(model, optimizer, iteration, scaler=None) -> the
    stepper (`gmp_manager`) whose step() drives them."""
    def optimizer_wrapper(model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int,
                          scaler: Any = None) -> Any:
        return gmp_manager(source, model, optimizer, steps_per_epoch, log_dir=log_dir,
                           start_iteration=iteration, scaler=scaler, variables=variables)[1]
    return optimizer_wrapper
