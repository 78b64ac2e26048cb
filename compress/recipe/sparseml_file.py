"""`modifiers:` as a path to a SparseML recipe file, used as written.

The file (`.yaml`, or `.md` with YAML front matter, as SparseML's recipe cards) is resolved
relative to the recipe that names it and checked by the same safe-YAML rules as a recipe: a safe
loader, `!Tags` only on entries of a modifiers list (`modifiers`, `training_modifiers`,
`pruning_modifiers`, ... at the top or one stage down) and only SparseML's modifier names. SparseML's
own loader then reads it (variables, `eval()`, `__ALL_PRUNABLE__`) when the recipe is validated.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from compress.core.errors import RecipeError
from compress.recipe.safe_yaml import (TAG_KEY, dump_recipe_yaml, in_sparseml_modifiers_list,
                                       load_yaml_text)

SUFFIXES = (".yaml", ".md")
# SparseML's own selections, and the toolkit's prunable set (`__PRUNABLE__`, inline modifiers)
SELECTORS = ("__ALL__", "__ALL_PRUNABLE__", "__ALL_QUANTIZABLE__", "__PRUNABLE__")  # what SparseML's loader accepts
# SparseML's own front-matter pattern (sparseml.optim.helpers._load_yaml_str_from_file)
FRONT_MATTER = re.compile(r"^\s*(?:---|\+\+\+)(.*?)(?:---|\+\+\+)", re.S | re.M)


def resolve_modifier_files(raw: dict[str, Any], base_dir: Path, source: str) -> dict[str, Any]:
    """The raw recipe with a `modifiers:` path (top level and smoke profile) made absolute
    (relative paths are relative to `base_dir`, the recipe file's folder) and checked."""
    out = dict(raw)
    if isinstance(out.get("modifiers"), str):
        out["modifiers"] = check_recipe_file(out["modifiers"], base_dir, source, "modifiers")
    smoke = out.get("smoke")
    if isinstance(smoke, dict) and isinstance(smoke.get("modifiers"), str):
        out["smoke"] = {**smoke, "modifiers": check_recipe_file(smoke["modifiers"], base_dir, source,
                                                                "smoke.modifiers")}
    return out


def check_recipe_file(value: str, base_dir: Path, source: str, key: str) -> str:
    """Check one SparseML recipe file; return its absolute path."""
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if path.suffix.lower() not in SUFFIXES:
        raise RecipeError(f"'{value}' is not a SparseML recipe file: expected a .yaml file or a .md "
                          "recipe card with YAML front matter", file=source, key=key)
    if not path.is_file():
        raise RecipeError(f"SparseML recipe file '{value}' does not exist (looked for {path}; "
                          "relative paths are relative to the recipe file)", file=source, key=key)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read the SparseML recipe file: {err}", file=str(path)) from err
    data = load_yaml_text(recipe_yaml_of(text, path), str(path), in_sparseml_modifiers_list)
    if not isinstance(data, dict) or not any("modifiers" in str(k) for k in _keys(data)):
        raise RecipeError("a SparseML recipe needs at least one list of modifiers under a key "
                          "naming `modifiers` (e.g. `training_modifiers:`)", file=str(path))
    return str(path)


def recipe_yaml_of(text: str, path: Path) -> str:
    """The YAML of a recipe file: the whole `.yaml`, or a `.md` card's front matter."""
    if path.suffix.lower() != ".md":
        return text
    found = FRONT_MATTER.search(text)
    if found is None:
        raise RecipeError("a .md recipe card needs YAML front matter between '---' lines",
                          file=str(path))
    return found.group(1)


def prefixed_recipe(path: str, prefix: str) -> str:
    """The recipe file's YAML as text with `prefix` before every modifier's parameter names and
    `re:` patterns (`modifier_prefix`): a classifier's recipe (`conv1.weight`) aimed at a
    detector's backbone (`backbone.body.conv1.weight`). Variables, `eval()` and the modifiers'
    other arguments stay as written; SparseML's loader reads the text as it reads the file."""
    file = Path(path)
    data = load_yaml_text(recipe_yaml_of(file.read_text(encoding="utf-8"), file), path,
                          in_sparseml_modifiers_list)
    return dump_recipe_yaml(prefix_modifiers(data, prefix))


def prefix_modifiers(data: Any, prefix: str) -> Any:
    """`data` with `prefix_params` applied to the `params` of every tagged modifier in it (and to
    the name lists of a per-sparsity `final_sparsity` mapping)."""
    if isinstance(data, list):
        return [prefix_modifiers(item, prefix) for item in data]
    if not isinstance(data, dict):
        return data
    if TAG_KEY not in data:
        return {key: prefix_modifiers(value, prefix) for key, value in data.items()}
    out = dict(data)
    if "params" in out:
        out["params"] = prefix_params(out["params"], prefix)
    if isinstance(out.get("final_sparsity"), dict):
        out["final_sparsity"] = {k: prefix_params(v, prefix)
                                 for k, v in out["final_sparsity"].items()}
    return out


def prefix_params(params: Any, prefix: str) -> Any:
    """A modifier's `params` with `prefix` put before each name and inside each `re:` pattern
    (escaped, after a leading `^`); SparseML's selections (`__ALL_PRUNABLE__`, ...), `eval()`
    and non-strings are left alone."""
    if isinstance(params, list):
        return [prefix_params(item, prefix) for item in params]
    if not isinstance(params, str) or params in SELECTORS or params.startswith("eval("):
        return params
    if not params.startswith("re:"):
        return prefix + params
    pattern = params[3:]
    anchor = "^" if pattern.startswith("^") else ""
    return f"re:{anchor}{re.escape(prefix)}{pattern[len(anchor):]}"


def _keys(data: dict[str, Any]) -> list[str]:
    """Top-level keys and, for stage mappings, the keys one level down."""
    keys = [str(k) for k in data]
    for value in data.values():
        if isinstance(value, dict):
            keys += [str(k) for k in value]
    return keys
