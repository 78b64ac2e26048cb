"""Which parameters the recipe's modifiers name, and whether the model has them.

`modifier_source` is what SparseML loads (a recipe file's path, its text with `modifier_prefix`
applied, or the inline list as recipe text). `check_recipe_modifiers` runs when a recipe is
loaded, before anything is written: every parameter name and `re:` pattern the modifiers select
must match a parameter of the recipe's detector (SparseML's own rule; otherwise it raises a
RuntimeError once training starts). The names come from the detector built on the meta device
(no memory, no weights). A miss is one recipe-error line naming the file, the pattern, what the
detector's names look like and the `modifier_prefix` that would match them.
"""
from __future__ import annotations

from typing import Optional

import torch

from compress.core.errors import RecipeError
from compress.core.param_names import param_matches
from compress.lottery.sparseml_adapter import modifier_params
from compress.models.build import build_model
from compress.recipe.safe_yaml import modifiers_to_sparseml_yaml
from compress.recipe.schema import Recipe
from compress.recipe.sparseml_file import SELECTORS, prefix_modifiers, prefixed_recipe

PRUNABLE_PLACEHOLDER = "__PRUNABLE__"  # in a modifier's params: the toolkit's prunable set
ALL_PRUNABLE = "__ALL_PRUNABLE__"  # SparseML's own selection (every Conv / Linear weight)
SHOWN_NAMES = 2  # model parameter names a "matches nothing" error shows


def modifier_source(recipe: Recipe, prunable: Optional[tuple[str, ...]]) -> Optional[str]:
    """What SparseML loads: the recipe file's path (its text, with `modifier_prefix`), or the
    inline list as recipe text with `__PRUNABLE__` replaced by `prunable` (None, before the model
    is known: by SparseML's `__ALL_PRUNABLE__`, for reading the modifiers only)."""
    prefix = recipe.modifier_prefix
    if isinstance(recipe.modifiers, str):
        return prefixed_recipe(recipe.modifiers, prefix) if prefix else recipe.modifiers
    if not recipe.modifiers:
        return None
    stand_in = ALL_PRUNABLE if prunable is None else list(prunable)
    modifiers = [{k: (stand_in if v == PRUNABLE_PLACEHOLDER else v) for k, v in m.items()}
                 for m in prefix_modifiers(recipe.modifiers, prefix)]
    return modifiers_to_sparseml_yaml(modifiers)


def check_recipe_modifiers(recipe: Recipe, recipe_path: str) -> None:
    """RecipeError unless every name / pattern of the modifiers matches the detector's names."""
    source = modifier_source(recipe, None)
    if source is None:
        return
    params = modifier_params(source, recipe.modifier_variables)
    if all(p in SELECTORS for group in params for p in group):
        return  # SparseML's selections and the prunable set: nothing to look up
    file = recipe.modifiers if isinstance(recipe.modifiers, str) else recipe_path
    check_params_found(params, detector_param_names(recipe), file)


def detector_param_names(recipe: Recipe) -> list[str]:
    """The recipe's detector's parameter names (built on the meta device; the class count does
    not change a name)."""
    m = recipe.model
    with torch.device("meta"):
        model = build_model(m.arch, m.backbone, 2, trainable_layers=m.trainable_layers,
                            norm=m.norm, min_size=m.min_size, max_size=m.max_size, heads=m.heads)
    return [name for name, _ in model.named_parameters()]


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
    return any(param_matches(pattern, name) for name in names)


def _prefix_hint(pattern: str, names: list[str]) -> tuple[Optional[str], list[str]]:
    """The shortest module path that, put before `pattern`, matches a name; and every name some
    module path before `pattern` matches (in the model's order)."""
    found: dict[str, list[str]] = {}
    for name in names:
        starts = [i + 1 for i, ch in enumerate(name) if ch == "."]
        for start in starts:
            if _matches(pattern, [name[start:]]):
                found.setdefault(name[:start], []).append(name)
                break
    if not found:
        return None, []
    alike = set().union(*found.values())
    return min(found, key=len), [name for name in names if name in alike]
