"""The recipe's SparseML modifiers for training: an inline `modifiers:` list, or a SparseML recipe
file (`.yaml`, or `.md` with YAML front matter) loaded by SparseML's own loader.

Every method runs the training modifiers (learning rate, epochs, weight decay) on each round's
training; the other modifiers (pruning, ...) need method `gradual` (the recipe schema checks this).
A `!EpochRangeModifier` sets the length of every round's training; a learning-rate modifier
replaces the toolkit's warm-up / step schedule.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Optional

from compress.lottery.sparseml_adapter import (LR_MODIFIERS, epoch_range_epochs, modifier_names,
                                               modifier_wrapper)
from compress.recipe.safe_yaml import modifiers_to_sparseml_yaml
from compress.recipe.schema import Recipe
from compress.training.round import Schedule

log = logging.getLogger(__name__)
PRUNABLE_PLACEHOLDER = "__PRUNABLE__"  # in a modifier's params: the toolkit's prunable set


def modifier_source(recipe: Recipe, prunable: tuple[str, ...]) -> Optional[str]:
    """What SparseML loads: the recipe file's path, or the inline list as recipe text."""
    if isinstance(recipe.modifiers, str):
        return recipe.modifiers
    if not recipe.modifiers:
        return None
    modifiers = [{k: (list(prunable) if v == PRUNABLE_PLACEHOLDER else v) for k, v in m.items()}
                 for m in recipe.modifiers]
    return modifiers_to_sparseml_yaml(modifiers)


def modifier_factory(recipe: Recipe, iters_per_epoch: int,
                     prunable: tuple[str, ...]) -> Optional[Callable[[Path], Callable]]:
    """log_dir -> the training loop's optimizer wrapper running the modifiers (None: none)."""
    source = modifier_source(recipe, prunable)
    if source is None:
        return None
    variables = dict(recipe.modifier_variables)
    return lambda log_dir: modifier_wrapper(source, iters_per_epoch, log_dir, variables)


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
