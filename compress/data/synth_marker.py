"""The marker file a generated synthetic set carries, and whether a folder may take one.

`write_synthetic` records each finished split (task, images, seed, image size, difficulty) in
`<root>/lth_compress_synthetic.json`, after the split's annotations. Only a folder that is empty,
missing, or marked with exactly the settings asked for is ever (re)generated; anything else is a
user's folder and is never written into.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from compress.core.atomic import write_json

MARKER = "lth_compress_synthetic.json"
GENERATOR = "lth-compress synthetic"


def read_marker(root: str | Path) -> Optional[dict[str, Any]]:
    """The marker's content, or None when `root` carries no (readable) marker of ours."""
    path = Path(root) / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        return None
    return data if isinstance(data.get("splits"), dict) else None


def record_split(root: str | Path, split: str, settings: dict[str, Any]) -> None:
    """Mark `split` of the set at `root` as generated with `settings` (call once it is complete)."""
    data = read_marker(root) or {"generator": GENERATOR, "version": 1, "splits": {}}
    data["splits"][split] = settings
    write_json(Path(root) / MARKER, data)


def forget_split(root: str | Path, split: str) -> None:
    """Unmark `split` before it is regenerated (a half-written split is then never trusted)."""
    data = read_marker(root)
    if data is not None and split in data["splits"]:
        del data["splits"][split]
        write_json(Path(root) / MARKER, data)


def folder_state(root: str | Path, wanted: dict[str, dict[str, Any]]) -> str:
    """What `root` is for a synthetic set of splits `wanted` (split -> settings):
    "missing" or "empty" (free to generate), "ready" (marked with these settings: reuse),
    "other" (marked, other settings) or "foreign" (files that are not a marked set)."""
    root = Path(root)
    if not root.exists():
        return "missing"
    if root.is_dir() and not any(root.iterdir()):
        return "empty"
    marker = read_marker(root) if root.is_dir() else None
    if marker is None:
        return "foreign"
    splits = marker["splits"]
    return "ready" if all(splits.get(s) == v for s, v in wanted.items()) else "other"


def describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(settings.items()))
