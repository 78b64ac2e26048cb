"""SparseML's rule for which parameters a modifier's `params` select, in one place.

A pattern is a parameter name (equal) or `re:<regex>` (`re.match`: anchored at the start only, as
SparseML's `any_str_or_regex_matches_param_name` does); `__ALL__` and `__ALL_PRUNABLE__` (the whole
`params` value or one of its entries, as SparseML's `_check_params_match`) select every parameter
there is to select.
"""
from __future__ import annotations

import re
from typing import Any

ALL_TOKENS = ("__ALL__", "__ALL_PRUNABLE__")


def param_matches(pattern: str, name: str) -> bool:
    """Whether one `params` entry selects the parameter `name` (SparseML's rule)."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return pattern == name


def selects_all(params: Any) -> bool:
    """Whether a modifier's `params` value is `__ALL__` / `__ALL_PRUNABLE__` (alone or in a list)."""
    if isinstance(params, str):
        return params in ALL_TOKENS
    return isinstance(params, (list, tuple)) and any(p in ALL_TOKENS for p in params)


def selected(params: Any, names: list[str]) -> list[str]:
    """The names among `names` a modifier's `params` (a name, a pattern or a list) select."""
    if selects_all(params):
        return list(names)
    patterns = [params] if isinstance(params, str) else list(params or [])
    return [name for name in names if any(param_matches(p, name) for p in patterns)]
