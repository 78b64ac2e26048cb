"""The marker file a generated synthetic set carries, and whether a folder may take one.

`write_synthetic` marks a split "in progress" (`in_progress`: split -> settings) in
`<root>/lth_compress_synthetic.json` before its first image, and records it as finished (`splits`)
after its annotations. A folder that is empty, missing, marked with exactly the settings asked for
(reused), or marked with a split in progress (a generation that was killed: regenerated) is ours;
anything else is a user's folder and is never written into.
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


def _in_progress(data: dict[str, Any]) -> dict[str, Any]:
    found = data.get("in_progress")
    return found if isinstance(found, dict) else {}


def start_split(root: str | Path, split: str, settings: dict[str, Any]) -> None:
    """Mark `split` in progress (and no longer finished) before its first file is written: a run
    killed while generating leaves a folder that is known to be ours, and regenerated."""
    data = read_marker(root) or {"generator": GENERATOR, "version": 1, "splits": {}}
    data["splits"].pop(split, None)
    data["in_progress"] = {**_in_progress(data), split: settings}
    write_json(Path(root) / MARKER, data)


def record_split(root: str | Path, split: str, settings: dict[str, Any]) -> None:
    """Mark `split` of the set at `root` as generated with `settings` (call once it is complete)."""
    data = read_marker(root) or {"generator": GENERATOR, "version": 1, "splits": {}}
    data["splits"][split] = settings
    data["in_progress"] = {s: v for s, v in _in_progress(data).items() if s != split}
    if not data["in_progress"]:
        del data["in_progress"]
    write_json(Path(root) / MARKER, data)


def folder_state(root: str | Path, wanted: dict[str, dict[str, Any]]) -> str:
    """What `root` is for a synthetic set of splits `wanted` (split -> settings):
    "missing" or "empty" (free to generate), "ready" (marked with these settings: reuse),
    "partial" (ours, a split left in progress: regenerate), "other" (marked, other settings) or
    "foreign" (files that are not a marked set)."""
    root = Path(root)
    if not root.exists():
        return "missing"
    if root.is_dir() and not any(root.iterdir()):
        return "empty"
    marker = read_marker(root) if root.is_dir() else None
    if marker is None:
        return "foreign"
    splits = marker["splits"]
    if all(splits.get(s) == v for s, v in wanted.items()):
        return "ready"
    return "partial" if _in_progress(marker) else "other"


def describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(settings.items()))
