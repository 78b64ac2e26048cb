"""A finished run as the report reads it, and the helpers every report section shares."""
from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.core.atomic import write_bytes
from compress.core.errors import DataError, UserError
from compress.core.folders import RunFolder
from compress.lottery.masks import load_mask
from compress.report.page import Figure, Missing, Section, Table
from compress.report.summary_checks import check_round, check_summary
from compress.run.loaded import load_model
from compress.evaluate.analysis.macs import count_macs
from compress.export.compact import bound_bytes
from compress.evaluate.engines import EVALUATE_ENGINES

log = logging.getLogger(__name__)


@dataclass
class RunData:
    root: Path
    label: str
    summary: dict[str, Any]
    rounds: list[dict[str, Any]]

    @property
    def task(self) -> str:
        return self.summary.get("task", "")

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.root)

    @property
    def last_round(self) -> int:
        return self.rounds[-1]["round"]

    def eval_dirs(self) -> list[Path]:
        found = [self.root / "eval" / e for e in EVALUATE_ENGINES if (self.root / "eval" / e).is_dir()]
        extra = sorted(p for p in (self.root / "eval").glob("*") if p.is_dir() and p not in found)
        return found + extra


def is_dense(record: dict[str, Any]) -> bool:
    """A round with no pruned weight (its network sparsity may still count incidental zeros)."""
    value = record.get("prunable_sparsity", record.get("sparsity"))
    return value is not None and float(value) == 0.0


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise Missing(f"{path} is missing") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"invalid JSON ({err})", file=str(path)) from err
    except RecursionError as err:
        raise DataError("JSON nested too deeply to read", file=str(path)) from err


def load_run(root: Path, label: str) -> RunData:
    """A run folder's summary and per-round records (from summary.json, else rounds/*/metrics.json)."""
    if not root.is_dir():
        raise UserError("run folder not found", file=str(root))
    summary = read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    check_summary(summary, str(root / "summary.json"))  # before any plot is (re)drawn
    rounds = summary.get("rounds") or []
    if not rounds:
        folder = RunFolder(root)
        files = [f.metrics for f in map(folder.round, folder.round_indices()) if f.metrics.is_file()]
        rounds = [read_json(p) for p in files]
        for path, record in zip(files, rounds):
            check_round(record, str(path), "(top level)")
    if not rounds:
        raise UserError("not a finished run: no summary.json rounds and no rounds/round_<k>/"
                        "metrics.json", file=str(root))
    return RunData(root, label, summary, sorted(rounds, key=lambda r: r["round"]))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def per_run(section: Section, runs: list[RunData],
            fn: Callable[[RunData], None]) -> None:
    """Call fn for each run; a run whose input is missing adds a 'not run' line, not a failure."""
    for run in runs:
        try:
            fn(run)
        except Missing as err:
            section.missing.append(f"not run ({run.label}): {err}")


def figure(section: Section, path: Path, caption: str) -> None:
    section.figures.append(Figure(path, caption))


def table(section: Section, header: list[str], rows: list[list[str]], title: str = "") -> None:
    if rows:
        section.tables.append(Table(header, rows, title))


def atomic_plot(draw: Callable[[Path], Any], target: Path) -> Path:
    """Run a plotting function that writes a file directly, then move its bytes atomically."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".plot_") as tmp:
        scratch = Path(tmp) / target.name
        draw(scratch)
        write_bytes(target, scratch.read_bytes())
    return target


def size_macs_series(run: RunData) -> dict[str, Any]:
    """Per round: the fp32 size of the parameters, dense and at the information bound of the round's
    mask (compress.export.compact.bound_bytes), and effective MACs (layer MACs x the round's density).

    Layer MACs come from one counting pass (compress.evaluate.analysis.macs.count_macs) on the ticket at the export
    image size, unless summary.json already holds macs.per_round.
    """
    masks = []
    for r in run.rounds:
        path = run.folder.round(r["round"]).mask
        if not path.is_file():
            raise Missing(f"{path} is missing")
        masks.append(load_mask(path))
    loaded = load_model(run.root if run.folder.ticket.is_file()
                        else run.folder.round(run.last_round).checkpoint)
    numel = {n: p.numel() for n, p in loaded.model.named_parameters()}
    bounds = [sum(bound_bytes(k, k - int(m[n].sum()) if n in m else 0) for n, k in numel.items())
              for m in masks]
    macs_info = run.summary.get("macs") or {}
    size = macs_info.get("image_size") or loaded.recipe.image_size
    if macs_info.get("per_round"):
        dense, effective = macs_info["dense"], [float(v) for v in macs_info["per_round"]]
    else:
        layers = count_macs(loaded.model, size)["layers"]
        dense = sum(e["dense"] for e in layers.values())
        effective = [sum(e["dense"] * _density(m.get(f"{name}.weight")) for name, e in layers.items())
                     for m in masks]
    ticket = run.summary.get("ticket") or {}
    x = ticket.get("sparsity", run.rounds[-1].get("sparsity", 0.0))
    export = {k: (x, v) for k, v in (run.summary.get("export") or {}).items()
              if k in ("onnx_bytes", "gzip_bytes", "compact_bytes") and v}
    return {"sparsity": [r.get("sparsity", 0.0) for r in run.rounds], "dense_bytes": 4 * sum(numel.values()),
            "bound_bytes": bounds, "export": export, "dense_macs": dense, "effective_macs": effective,
            "image_size": size}


def _density(kept: Any) -> float:
    return 1.0 if kept is None else float(kept.sum()) / kept.numel()
