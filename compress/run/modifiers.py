"""The recipe's SparseML modifiers for training: an inline `modifiers:` list, or a SparseML recipe
file (`.yaml`, or `.md` with YAML front matter) loaded by SparseML's own loader.

Every method runs the training modifiers (learning rate, epochs, weight decay) on each round's
training; the other modifiers (pruning, ...) need method `gradual` (the recipe schema checks this).
A `!EpochRangeModifier` sets the length of every round's training; a learning-rate modifier
replaces the toolkit's warm-up / step schedule. `modifier_prefix` puts a module path before every
parameter name of the modifiers (a classifier's recipe on a detector's backbone). A parameter name
or `re:` pattern that matches nothing in the model is a recipe error naming it, checked when the
training starts (SparseML would raise a RuntimeError there).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from compress.core.errors import RecipeError
from compress.lottery.sparseml_adapter import (LR_MODIFIERS, epoch_range_epochs, modifier_names,
                                               modifier_params, modifier_wrapper)
from compress.recipe.safe_yaml import modifiers_to_sparseml_yaml
from compress.recipe.schema import Recipe
from compress.recipe.sparseml_file import SELECTORS, prefix_modifiers, prefixed_recipe
from compress.training.round import Schedule

log = logging.getLogger(__name__)
PRUNABLE_PLACEHOLDER = "__PRUNABLE__"  # in a modifier's params: the toolkit's prunable set
SHOWN_NAMES = 2  # model parameter names a "matches nothing" error shows


def modifier_source(recipe: Recipe, prunable: tuple[str, ...]) -> Optional[str]:
    """What SparseML loads: the recipe file's path (its text, with `modifier_prefix`), or the
    inline list as recipe text."""
    prefix = recipe.modifier_prefix
    if isinstance(recipe.modifiers, str):
        return prefixed_recipe(recipe.modifiers, prefix) if prefix else recipe.modifiers
    if not recipe.modifiers:
        return None
    modifiers = [{k: (list(prunable) if v == PRUNABLE_PLACEHOLDER else v) for k, v in m.items()}
                 for m in prefix_modifiers(recipe.modifiers, prefix)]
    return modifiers_to_sparseml_yaml(modifiers)


def modifier_factory(recipe: Recipe, iters_per_epoch: int,
                     prunable: tuple[str, ...]) -> Optional[Callable[[Path], Callable]]:
    """log_dir -> the training loop's optimizer wrapper running the modifiers (None: none)."""
    source = modifier_source(recipe, prunable)
    if source is None:
        return None
    variables = dict(recipe.modifier_variables)
    where = recipe.modifiers if isinstance(recipe.modifiers, str) else None
    params = modifier_params(source, variables)
    return lambda log_dir: CheckedWrapper(modifier_wrapper(source, iters_per_epoch, log_dir,
                                                           variables), params, where)


@dataclasses.dataclass(frozen=True)
class CheckedWrapper:
    """The modifier wrapper, called only once every parameter name / pattern of the modifiers
    matches a parameter of the model it is given."""

    wrap: Callable[..., Any]
    params: list[list[str]]
    file: Optional[str]  # the SparseML recipe file (None: inline modifiers)

    def __call__(self, model: nn.Module, optimizer: Any, iteration: int, scaler: Any = None) -> Any:
        check_params_found(self.params, [n for n, _ in model.named_parameters()], self.file)
        return self.wrap(model, optimizer, iteration, scaler)


def check_params_found(params: list[list[str]], names: list[str], file: Optional[str]) -> None:
    """RecipeError (exit 2) naming the first name / `re:` pattern that matches none of `names`
    (SparseML's rule: a name equal, a pattern `re.match`-ing), what the model's names look like
    and the `modifier_prefix` that would match them."""
    for pattern in (p for group in params for p in group):
        if pattern in SELECTORS or _matches(pattern, names):
            continue
        prefix, alike = _prefix_hint(pattern, names)
        shown = ", ".join((alike or names)[:SHOWN_NAMES])
        hint = (f"; set `modifier_prefix: {prefix}` in the recipe to aim the modifiers there"
                if prefix else "")
        raise RecipeError(f"'{pattern}' matches no parameter of the model (its names look like "
                          f"{shown}, ...){hint}", file=file, key="modifiers.params")


def _matches(pattern: str, names: list[str]) -> bool:
    if pattern.startswith("re:"):
        return any(re.match(pattern[3:], name) for name in names)
    return pattern in names


def _prefix_hint(pattern: str, names: list[str]) -> tuple[Optional[str], list[str]]:
    """The shortest module path that, put before `pattern`, matches a name; and every name some
    module path before `pattern` matches (in the model's order)."""
    found: dict[str, list[str]] = {}
    for name in names:
        starts = [0] + [i + 1 for i, ch in enumerate(name) if ch == "."]
        for start in starts[1:]:
            if _matches(pattern, [name[start:]]):
                found.setdefault(name[:start], []).append(name)
                break
    if not found:
        return None, []
    alike = set().union(*found.values())
    return min(found, key=len), [name for name in names if name in alike]


def lr_from_modifiers(recipe: Recipe, prunable: tuple[str, ...]) -> bool:
    source = modifier_source(recipe, prunable)
    names = modifier_names(source, recipe.modifier_variables) if source else []
    return any(name in LR_MODIFIERS for name in names)


def apply_epoch_range(recipe: Recipe, schedule: Schedule, prunable: tuple[str, ...]) -> Schedule:
    """The schedule with the length a `!EpochRangeModifier` sets, if the modifiers hold one."""
    source = modifier_source(recipe, prunable)
    epochs = epoch_range_epochs(source, recipe.modifier_variables) if source else None
    if epochs is None:
        return schedule
    total = max(1, round(epochs * schedule.iterations_per_epoch))
    if total != schedule.total_iterations:
        log.info("the modifiers' !EpochRangeModifier sets training to %g epochs (%d iterations; "
                 "train.* said %d)", epochs, total, schedule.total_iterations)
    return dataclasses.replace(schedule, total_iterations=total)
