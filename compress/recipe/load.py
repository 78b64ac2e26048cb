"""Load, merge and validate a recipe: safe YAML (SparseML modifier tags allowed, nothing else),
the smoke profile, `--set key.path=value` overrides, then the typed schema. Paths in the file are
relative to the file, paths in `--set` to the current folder (compress/recipe/paths.py).

Every failure is a RecipeError with one line: file, key path, bad value, what is allowed.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from compress.core.errors import RecipeError
from compress.recipe.modifier_params import check_recipe_modifiers
from compress.recipe.schema import Recipe, rewind_beyond_schedule
from compress.recipe.paths import resolve_override_path, resolve_recipe_paths
from compress.recipe.safe_yaml import TAG_KEY, dump_recipe_yaml, load_yaml_text
from compress.recipe.sparseml_file import resolve_modifier_files


def load_recipe(path: str | Path, *, smoke: bool = False, overrides: list[str] = ()) -> Recipe:
    """Read and validate a recipe file, apply the smoke profile and overrides, return the model."""
    path = Path(path)
    raw = resolve_modifier_files(read_recipe_dict(path), path.parent, str(path))
    raw = resolve_recipe_paths(raw, path.parent.resolve())
    validate(raw, str(path))  # the file itself must be valid, smoke or not
    if raw.get("smoke"):
        validate(merge_smoke(raw), f"{path} (smoke profile)")
    if smoke:
        raw = merge_smoke(raw)
    for item in overrides:
        raw = resolve_override_path(apply_override(raw, item), item.partition("=")[0], Path.cwd())
    raw = resolve_modifier_files(raw, path.parent, "--set")
    recipe = validate(raw, str(path) if not overrides else f"{path} (with --set)")
    check_recipe_modifiers(recipe, str(path))  # their params name the detector's parameters
    return recipe


def read_recipe_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"recipe file does not exist (expected a YAML file)", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read the recipe: {err}", file=str(path)) from err
    raw = load_yaml_text(text, str(path))
    if raw is None:
        raise RecipeError("the recipe is empty; it needs at least `name` and `model.arch`", file=str(path))
    if not isinstance(raw, dict):
        raise RecipeError(f"the recipe must be a mapping of sections, got {type(raw).__name__}",
                          file=str(path))
    return raw


def merge_smoke(raw: dict[str, Any]) -> dict[str, Any]:
    """The recipe with its `smoke` profile merged in; smoke always runs on generated data."""
    merged = deep_merge(raw, raw.get("smoke") or {})
    data = dict(merged.get("data") or {})
    data["dataset"] = "synthetic"
    data["root"] = ((raw.get("smoke") or {}).get("data") or {}).get("root")
    merged["data"] = data
    return merged


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and TAG_KEY not in value:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """Apply one `key.path=value` (value parsed as YAML) to the raw recipe dict."""
    if "=" not in item:
        raise RecipeError(f"'{item}' is not key.path=value", file="--set")
    key_path, _, text = item.partition("=")
    value = load_yaml_text(text, f"--set {key_path}") if text.strip() else None
    keys = key_path.strip().split(".")
    _check_override_path(keys, key_path)
    out = copy.deepcopy(raw)
    node = out
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise RecipeError(f"'{key}' is not a section", file="--set", key=key_path)
    node[keys[-1]] = value
    return out


def _check_override_path(keys: list[str], key_path: str) -> None:
    model: type[BaseModel] | None = Recipe
    for depth, key in enumerate(keys):
        if model is None:
            return  # free-form section (modifiers, smoke)
        fields = model.model_fields
        if key not in fields:
            where = ".".join(keys[:depth]) or "the recipe"
            raise RecipeError(f"unknown key '{key}' in {where}{_did_you_mean(key, list(fields))}; "
                              f"allowed: {', '.join(fields)}", file="--set", key=key_path)
        annotation = fields[key].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def validate(raw: dict[str, Any], source: str) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # typos first
        raise RecipeError(_describe(errors[0], raw), file=source) from None
    problem = rewind_beyond_schedule(recipe)
    if problem:
        raise RecipeError(problem, file=source, key="lottery.rewind")
    return recipe


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return (f"{key}: unknown key '{loc[-1]}'{_did_you_mean(loc[-1], allowed)}; "
                f"allowed: {', '.join(allowed)}")
    if kind == "missing":
        return f"{key}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, dict):
        return f"{key}: {message}"
    return f"{key}: {json.dumps(value, default=str)} is not allowed: {message}"


def _allowed_keys(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def recipe_hash(recipe: Recipe) -> str:
    """Short content hash of the resolved recipe (names a run folder, stamps a ticket)."""
    payload = json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:8]


BACKBONE_TAGS = {"resnet18": "r18", "resnet50": "r50"}


def run_folder_name(recipe: Recipe) -> str:
    """The default run folder name, from what runs (after the smoke merge and `--set`): arch,
    backbone, method and the recipe hash, e.g. `maskrcnn_r18_imp-1a2b3c4d`."""
    backbone = BACKBONE_TAGS.get(recipe.model.backbone, recipe.model.backbone)
    return f"{recipe.model.arch}_{backbone}_{recipe.lottery.method}-{recipe_hash(recipe)}"


def resolved_yaml(recipe: Recipe) -> str:
    return dump_recipe_yaml(recipe.model_dump(mode="json"))


def load_resolved(path: str | Path) -> Recipe:
    """Load the `recipe.yaml` saved in a run folder (already resolved; no smoke merge)."""
    path = Path(path)
    return validate(read_recipe_dict(path), str(path))
