"""The recipe's SparseML modifiers for training: an inline `modifiers:` list, or a SparseML recipe
file (`.yaml`, or `.md` with YAML front matter) loaded by SparseML's own loader.

Every method runs the training modifiers (learning rate, epochs, weight decay) on each round's
training; the other modifiers (pruning, ...) need method `gradual` (the recipe schema checks this).
A `!EpochRangeModifier` sets the length of every round's training; a learning-rate modifier
replaces the toolkit's warm-up / step schedule. `modifier_prefix` puts a module path before every
parameter name of the modifiers (a classifier's recipe on a detector's backbone). A parameter name
or `re:` pattern that matches nothing is a recipe error: checked when the recipe loads
(compress/recipe/modifier_params.py) and again on the very model training is given.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from compress.lottery.sparseml_adapter import (LR_MODIFIERS, epoch_range_epochs, modifier_names,
                                               modifier_params, modifier_wrapper)
from compress.recipe.modifier_params import check_params_found, modifier_source
from compress.recipe.schema import Recipe
from compress.training.round import Schedule

log = logging.getLogger(__name__)
__all__ = ["modifier_source", "modifier_factory", "lr_from_modifiers", "apply_epoch_range"]


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
    matches a parameter of the model it is given (SparseML would raise a RuntimeError)."""

    wrap: Callable[..., Any]
    params: list[list[str]]
    file: Optional[str]  # the SparseML recipe file (None: inline modifiers)

    def __call__(self, model: nn.Module, optimizer: Any, iteration: int, scaler: Any = None) -> Any:
        check_params_found(self.params, [n for n, _ in model.named_parameters()], self.file)
        return self.wrap(model, optimizer, iteration, scaler)


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
