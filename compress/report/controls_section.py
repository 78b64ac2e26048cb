"""The report's "ticket vs controls" section: the lottery-ticket figure and a table of the ticket
against each control (reinit, random_mask, rewind_to_init) at every round that trained them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.report import plots
from compress.report.page import Missing, Section, fmt
from compress.report.run_data import RunData, figure, is_dense, slug, table

METRICS = ("bbox_mAP", "segm_mAP", "kp_mAP")


def _x(record: dict[str, Any]) -> float:
    return float(record.get("prunable_sparsity", record.get("sparsity", 0.0)))


def _names(run: RunData) -> list[str]:
    names: list[str] = []
    for record in run.rounds:
        names += [n for n in record.get("controls") or {} if n not in names]
    return names


def sec_controls(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    found = [run for run in runs if _names(run)]
    if not found:
        raise Missing("no round trained controls (lottery.controls)")
    for run in found:
        _one(section, run, plot_dir, "ticket_vs_controls.png" if len(runs) == 1
             else f"ticket_vs_controls_{slug(run.label)}.png")


def _one(section: Section, run: RunData, plot_dir: Path, file_name: str) -> None:
    names = _names(run)
    pruned = [r for r in run.rounds if r["round"] > 0]
    metrics = [m for m in METRICS if any(r.get("metrics", {}).get(m) is not None for r in pruned)]
    if not metrics:
        raise Missing("the rounds recorded no bbox_mAP / segm_mAP / kp_mAP")
    ticket = [(_x(r), r.get("metrics", {})) for r in pruned]
    controls = {n: [(_x(r), r["controls"][n]) for r in pruned if n in (r.get("controls") or {})]
                for n in names}
    dense = run.rounds[0].get("metrics", {}) if is_dense(run.rounds[0]) else None
    path = plots.plot_ticket_vs_controls(ticket, controls, metrics, plot_dir / file_name, dense)
    figure(section, path, f"{run.label}: mAP vs prunable sparsity, the ticket (every round), each "
                          "control at its rounds, dense dashed")
    header = ["round", "prunable sparsity", "metric", "dense", "ticket",
              *names, *(f"ticket - {n}" for n in names)]
    rows = []
    for r in pruned:
        ctl = r.get("controls") or {}
        if not ctl:
            continue
        for m in metrics:
            value = r.get("metrics", {}).get(m)
            rows.append([str(r["round"]), fmt(_x(r)), m, fmt((dense or {}).get(m)), fmt(value),
                         *(fmt(ctl.get(n, {}).get(m)) for n in names),
                         *(fmt(_diff(value, ctl.get(n, {}).get(m))) for n in names)])
    table(section, header, rows, f"{run.label}: ticket vs controls (torch, validation set)")


def _diff(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else float(a) - float(b)
