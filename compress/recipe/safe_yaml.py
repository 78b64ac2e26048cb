"""Safe YAML for recipes: the SafeLoader plus SparseML's `!SomeModifier` tags, nothing else.

A tagged mapping `!GMPruningModifier {final_sparsity: 0.8}` becomes
`{"__tag__": "GMPruningModifier", "final_sparsity": 0.8}` and is written back as the same tag, so
the `modifiers:` section is SparseML's own recipe syntax in both directions.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import yaml

from compress.core.errors import RecipeError
from compress.lottery.sparseml_adapter import validate_modifier_tags

TAG_KEY = "__tag__"


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that records `!Name` tags for later checking against SparseML's modifiers."""


def _construct_tagged(loader: _RecipeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        mark = node.start_mark
        raise RecipeError(f"line {mark.line + 1}, column {mark.column + 1}: tag '!{tag_suffix}' must "
                          "tag a mapping of modifier arguments")
    args = loader.construct_mapping(node, deep=True)
    return {TAG_KEY: tag_suffix, **args}


_RecipeLoader.add_multi_constructor("!", _construct_tagged)


class _RecipeDumper(yaml.SafeDumper):
    pass


def _represent_dict(dumper: _RecipeDumper, data: dict[str, Any]) -> yaml.Node:
    if TAG_KEY in data:
        args = {k: v for k, v in data.items() if k != TAG_KEY}
        return dumper.represent_mapping(f"!{data[TAG_KEY]}", args)
    return dumper.represent_dict(data)


_RecipeDumper.add_representer(dict, _represent_dict)


def load_yaml_text(text: str, source: str,
                   tag_allowed: Callable[[str], bool] | None = None) -> Any:
    """Parse YAML safely; errors name the source, line and column. Tags are checked afterwards:
    allowed where `tag_allowed(key path)` (default: entries of the recipe's `modifiers` list)."""
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except RecipeError as err:
        raise RecipeError(str(err), file=source) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "malformed YAML"
        if "python/" in str(err):
            problem = f"{problem} (python tags are refused: recipes are loaded with a safe loader)"
        raise RecipeError(f"{where}{problem}", file=source) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"malformed YAML: {err}", file=source) from None
    check_tags(data, source, "", tag_allowed or _in_modifiers_list)
    return data


def check_tags(data: Any, source: str, key: str,
               allowed: Callable[[str], bool] = lambda key: False) -> None:
    """Every `!Tag` must be a SparseML modifier and appear only where `allowed(key path)`."""
    if isinstance(data, dict):
        if TAG_KEY in data:
            if not allowed(key):
                where = "the modifiers list" if allowed is _in_modifiers_list else \
                    "a modifiers list (a key naming `modifiers`)"
                raise RecipeError(f"tag '!{data[TAG_KEY]}' is only allowed on entries of {where}",
                                  file=source, key=key)
            validate_modifier_tags([data[TAG_KEY]], file=source, key=key)
        for child_key, value in data.items():
            if child_key != TAG_KEY:
                check_tags(value, source, f"{key}.{child_key}" if key else str(child_key), allowed)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            check_tags(value, source, f"{key}[{index}]", allowed)


def _in_modifiers_list(key: str) -> bool:
    return key.startswith("modifiers[") or key.startswith("smoke.modifiers[")


def in_sparseml_modifiers_list(key: str) -> bool:
    """A SparseML recipe file's modifier lists: any key naming `modifiers` (`modifiers`,
    `training_modifiers`, ...), at the top or one stage down."""
    return re.search(r"(^|\.)[^.\[]*modifiers\[\d+\]$", key) is not None


def dump_recipe_yaml(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_RecipeDumper, sort_keys=False, default_flow_style=False)


def modifiers_to_sparseml_yaml(modifiers: list[dict[str, Any]]) -> str:
    """The `modifiers:` section as a standalone SparseML recipe text."""
    return dump_recipe_yaml({"modifiers": modifiers})
