"""The report's "ticket vs controls" section: the lottery-ticket figure and a table of the ticket
against each control (reinit, random_mask, rewind_to_init) at every round that trained them, and
the seed spread (`lottery.seeds`) that says whether a gap is larger than the seed noise."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from compress.report import plots
from compress.report.page import Missing, Section, fmt
from compress.report.run_data import RunData, figure, is_dense, slug, table

METRICS = ("bbox_mAP", "segm_mAP", "kp_mAP")


def prunable_x(record: dict[str, Any]) -> float:
    """A round's (or control's) prunable sparsity, the x of every lottery figure."""
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
    ticket = [(prunable_x(r), r.get("metrics", {})) for r in pruned]
    controls = {n: [(prunable_x(r), r["controls"][n]) for r in pruned if n in (r.get("controls") or {})]
                for n in names}
    dense = run.rounds[0].get("metrics", {}) if is_dense(run.rounds[0]) else None
    spread = {prunable_x(r): {m: (*stats, len(seed_values(r, m))) for m in metrics
                              if (stats := spread_of(seed_values(r, m)))}
              for r in run.rounds if r.get("replicates")}
    path = plots.plot_ticket_vs_controls(ticket, controls, metrics, plot_dir / file_name, dense,
                                         spread)
    figure(section, path, f"{run.label}: mAP vs prunable sparsity, the ticket (every round), each "
                          "control at its rounds, dense dashed"
                          + ("; diamonds: mean +- sd over seeds" if spread else ""))
    header = ["round", "prunable sparsity", "metric", "dense", "ticket",
              *names, *(f"ticket - {n}" for n in names)]
    rows = []
    for r in pruned:
        ctl = r.get("controls") or {}
        if not ctl:
            continue
        for m in metrics:
            value = r.get("metrics", {}).get(m)
            rows.append([str(r["round"]), fmt(prunable_x(r)), m, fmt((dense or {}).get(m)), fmt(value),
                         *(fmt(ctl.get(n, {}).get(m)) for n in names),
                         *(fmt(_diff(value, ctl.get(n, {}).get(m))) for n in names)])
    table(section, header, rows, f"{run.label}: ticket vs controls (torch, validation set)")
    _spread_table(section, run, metrics)
    section.text += verdicts(run, names, metrics[0])


def _keeps_dense(run: RunData, metric: str) -> str | None:
    """The paper's first claim: up to which sparsity the ticket keeps the dense model's `metric`
    (within 2 sd of the dense seeds when replicated, else at least the dense value)."""
    first = run.rounds[0]
    if not is_dense(first) or first.get("metrics", {}).get(metric) is None:
        return None
    stats = spread_of(seed_values(first, metric))
    floor = stats[0] - 2 * stats[1] if stats else float(first["metrics"][metric])
    kept = None
    for r in run.rounds[1:]:
        value = r.get("metrics", {}).get(metric)
        if value is None or float(value) < floor:
            break
        kept = r
    what = (f"dense mean - 2 sd = {floor:.4f} ({len(seed_values(first, metric))} seeds)" if stats
            else f"the dense {floor:.4f} (one seed)")
    if kept is None:
        return f"{run.label}: the first pruned round already falls below {what}."
    return (f"{run.label}: the ticket keeps {metric} at or above {what} up to round {kept['round']} "
            f"({100 * prunable_x(kept):.1f}% of the prunable weights pruned)"
            + ("." if kept is run.rounds[-1] else f"; round {kept['round'] + 1} falls below."))


def verdicts(run: RunData, names: list[str], metric: str) -> list[str]:
    """One line per control at the sparsest round that trained it: the ticket's lead, against the
    seed noise (2 sd of the replicated round nearest in sparsity) when seeds were trained."""
    lines = [line] if (line := _keeps_dense(run, metric)) else []
    for name in names:
        trained = [r for r in run.rounds if name in (r.get("controls") or {})
                   and r.get("metrics", {}).get(metric) is not None
                   and r["controls"][name].get(metric) is not None]
        if not trained:
            continue
        r = max(trained, key=prunable_x)
        gap = float(r["metrics"][metric]) - float(r["controls"][name][metric])
        line = (f"{run.label}, round {r['round']} ({100 * prunable_x(r):.1f}% pruned): the ticket's {metric} "
                f"{fmt(r['metrics'][metric])} vs {name} {fmt(r['controls'][name][metric])}, "
                f"gap {gap:+.4f}")
        noise = against_noise(run, prunable_x(r), metric, gap)
        if noise:
            held = {1: "beats it beyond", 0: "is within", -1: "loses beyond"}[noise[0]]
            line += f": the ticket {held} {noise[1]}"
        else:
            line += " (no seed replicates: lottery.seeds gives the noise this gap should beat)"
        lines.append(line + ".")
    return lines


def against_noise(run: RunData, x: float, metric: str, gap: float) -> tuple[int, str] | None:
    """(+1 beyond, 0 within, -1 below) `gap` against 2 sd of `run`'s seed replicates at the
    replicated round nearest in sparsity to `x`, and the phrase naming that noise; None when the
    run trained no replicates."""
    replicated = [r for r in run.rounds if spread_of(seed_values(r, metric))]
    if not replicated:
        return None
    near = min(replicated, key=lambda q: abs(prunable_x(q) - x))
    values = seed_values(near, metric)
    sd = spread_of(values)[1]
    side = 1 if gap > 2 * sd else 0 if gap >= -2 * sd else -1
    return side, f"the seed noise (2 sd = {2 * sd:.4f}, round {near['round']}, {len(values)} seeds)"


def seed_values(record: dict[str, Any], metric: str) -> list[float]:
    """The round's own value and every seed replicate's, for `metric` (None dropped)."""
    values = [record.get("metrics", {}).get(metric)]
    values += [rep.get(metric) for rep in (record.get("replicates") or {}).values()]
    return [float(v) for v in values if v is not None]


def spread_of(values: list[float]) -> tuple[float, float] | None:
    """(mean, sample sd) of two or more values."""
    return (statistics.fmean(values), statistics.stdev(values)) if len(values) >= 2 else None


def _spread_table(section: Section, run: RunData, metrics: list[str]) -> None:
    replicated = [r for r in run.rounds if r.get("replicates")]
    if not replicated:
        return
    rows = []
    for r in replicated:
        for m in metrics:
            values = seed_values(r, m)
            stats = spread_of(values)
            rows.append([str(r["round"]), fmt(prunable_x(r)), m, str(len(values)),
                         ", ".join(fmt(v) for v in values),
                         fmt(stats[0]) if stats else "-", fmt(stats[1]) if stats else "-"])
    table(section, ["round", "prunable sparsity", "metric", "seeds", "values", "mean", "sd"], rows,
          f"{run.label}: seed spread (the run's seed first, then lottery.seeds); a ticket - control "
          "gap smaller than about 2 sd is within seed noise")


def _diff(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else float(a) - float(b)
