"""File paths in a recipe, made absolute when the recipe is loaded.

Every path a recipe names is relative to the recipe file's folder (as `modifiers:` always was);
an absolute path (or `~/...`) stays as it is. A `--set key=value` path is relative to the current
folder, where the user typed it. The saved `recipe.yaml` of a run holds the absolute paths, so
`--resume` (and `compress export RUN`) work from any folder.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

PATH_KEYS = (
    ("data", "root"),
    ("model", "weights"),
    ("model", "backbone_weights"),
    ("lottery", "source"),
    ("lottery", "runtime", "profile"),
)
SCHEMES = ("random-init:",)  # lottery.source values that are not paths


def absolute(value: Any, base_dir: Path) -> Any:
    """`value` as an absolute path against `base_dir`; non-strings and schemes unchanged."""
    if not isinstance(value, str) or not value.strip() or value.startswith(SCHEMES):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _section_paths(section: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    out = copy.deepcopy(section)
    for keys in PATH_KEYS:
        node: Optional[Any] = out
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = absolute(node[keys[-1]], base_dir)
    return out


def resolve_recipe_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The raw recipe with its paths (top level and smoke profile) absolute against `base_dir`."""
    out = _section_paths(raw, base_dir)
    if isinstance(out.get("smoke"), dict):
        out["smoke"] = _section_paths(out["smoke"], base_dir)
    return out


def resolve_override_path(raw: dict[str, Any], key_path: str, cwd: Path) -> dict[str, Any]:
    """After `--set key_path=...`: a path key's value made absolute against the current folder."""
    keys = tuple(key_path.strip().split("."))
    if keys not in PATH_KEYS:
        return raw
    out = copy.deepcopy(raw)
    node = out
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = absolute(node[keys[-1]], cwd)
    return out
