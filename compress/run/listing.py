"""`compress runs [DIR]`: one line per run folder under DIR (default runs/).

A run folder is a folder holding recipe.yaml or summary.json. Its line: folder name, recipe name,
lottery method, final (ticket) sparsity, bbox mAP of the ticket (torch evaluation, else the last
round's), and status: `finished` once `compress run` got to its end (summary.json `finished`),
else `incomplete` (still running, interrupted or failed: continue it with `--resume`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from compress.core.errors import UserError
from compress.recipe.safe_yaml import load_yaml_text

HEADER = ("run", "recipe", "method", "sparsity", "bbox mAP", "status")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_recipe(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml_text(path.read_text(), str(path))
    except Exception:  # noqa: BLE001 - a damaged recipe.yaml still lists, with '?' fields
        return {}
    return data if isinstance(data, dict) else {}


def _bbox_map(summary: dict[str, Any]) -> Optional[float]:
    torch_eval = (summary.get("eval") or {}).get("torch") or {}
    if torch_eval.get("bbox_mAP") is not None:
        return torch_eval["bbox_mAP"]
    rounds = summary.get("rounds") or []
    return (rounds[-1].get("metrics") or {}).get("bbox_mAP") if rounds else None


def run_row(folder: Path) -> list[str]:
    """The listing's cells for one run folder."""
    summary = _read_json(folder / "summary.json")
    recipe = _read_recipe(folder / "recipe.yaml") if (folder / "recipe.yaml").is_file() else {}
    lottery = recipe.get("lottery") if isinstance(recipe.get("lottery"), dict) else {}
    rounds = summary.get("rounds") or []
    sparsity = (summary.get("ticket") or {}).get("sparsity",
                                                 rounds[-1].get("sparsity") if rounds else None)
    bbox = _bbox_map(summary)
    return [folder.name, str(summary.get("name") or recipe.get("name") or "?"),
            str(summary.get("method") or lottery.get("method") or "?"),
            "-" if sparsity is None else f"{sparsity:.4f}",
            "-" if bbox is None else f"{bbox:.4f}",
            "finished" if summary.get("finished") else "incomplete"]


def run_folders(root: Path) -> list[Path]:
    """The run folders directly under `root`, by name."""
    if not root.is_dir():
        raise UserError("no such folder (runs are listed from the folder `compress run` writes "
                        "into, default runs/)", file=str(root))
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and ((p / "recipe.yaml").is_file() or (p / "summary.json").is_file()))


def format_runs(root: Path) -> str:
    """The listing as a plain-text table (or one line saying there is none)."""
    rows = [run_row(folder) for folder in run_folders(root)]
    if not rows:
        return f"no run folders in {root}"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
