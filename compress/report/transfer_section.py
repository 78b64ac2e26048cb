"""The report's "transfer vs direct pruning" section (the paper's Appendix A): each Mask Transfer /
Transfer Ticket run against the direct-pruning (IMP or one-shot) run's round nearest in prunable
sparsity, with the seed noise of the direct run when it trained seed replicates
(`lottery.seeds`). Runs are compared as given: `compress report runs/study runs/mt runs/tt`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.report import plots
from compress.report.controls_section import METRICS, against_noise, prunable_x
from compress.report.page import Missing, Section, fmt
from compress.report.run_data import RunData, figure, is_dense, table

TRANSFERS = ("mask_transfer", "transfer_ticket")
DIRECT = ("imp", "oneshot")
MATCH = 0.01  # the largest prunable-sparsity difference still called "matched"


def sec_transfer(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    transfers = [r for r in runs if r.summary.get("method") in TRANSFERS]
    direct = [r for r in runs if r.summary.get("method") in DIRECT and len(r.rounds) > 1]
    if not transfers:
        raise Missing("no Mask Transfer / Transfer Ticket run given (compress report RUN ...)")
    if not direct:
        raise Missing("no direct-pruning (imp / oneshot) run given to compare the transfers with")
    base = direct[0]
    rows, bars = [], {}
    for run in transfers:
        ticket = run.rounds[-1]
        near = min((r for r in base.rounds if r["round"] > 0), key=lambda r: abs(prunable_x(r) - prunable_x(ticket)))
        if abs(prunable_x(near) - prunable_x(ticket)) > MATCH:
            section.text.append(f"{run.label}: no round of {base.label} within {MATCH:.0%} of its "
                                f"sparsity {prunable_x(ticket):.4f} (nearest: round {near['round']}, "
                                f"{prunable_x(near):.4f}); not compared")
            continue
        verdict_metric = _first_metric(ticket)
        for metric in METRICS:
            mine, theirs = ticket.get("metrics", {}).get(metric), near.get("metrics", {}).get(metric)
            if mine is None or theirs is None:
                continue
            rows.append([run.label, run.summary["method"], fmt(prunable_x(ticket)), metric, fmt(mine),
                         f"{base.label} round {near['round']}", fmt(prunable_x(near)), fmt(theirs),
                         fmt(float(theirs) - float(mine))])
            group = bars.setdefault(metric, {})
            if is_dense(base.rounds[0]) and base.rounds[0].get("metrics", {}).get(metric) is not None:
                group.setdefault("dense", float(base.rounds[0]["metrics"][metric]))
            group.setdefault(f"direct (round {near['round']})", float(theirs))
            group[run.summary["method"]] = float(mine)
            if metric == verdict_metric:
                section.text.append(_verdict(run, base, near, metric, float(theirs) - float(mine)))
    if not rows:
        raise Missing("no transfer run matched a direct-pruning round in sparsity and metric")
    path = plots.plot_grouped_bars(_by_series(bars), plot_dir / "transfer_vs_direct.png",
                                   "mAP", "Transfer vs direct pruning")
    figure(section, path, "Appendix A at matched sparsity: the dense model, direct pruning (IMP) "
                          "and each transfer, per metric")
    table(section, ["run", "method", "prunable sparsity", "metric", "transfer", "direct", "direct "
                    "sparsity", "direct value", "direct - transfer"], rows,
          "Direct pruning vs transfer (torch, validation set)")


def _first_metric(record: dict[str, Any]) -> str | None:
    """The first of METRICS the record has: the metric a verdict speaks of."""
    return next((m for m in METRICS if record.get("metrics", {}).get(m) is not None), None)


def _by_series(bars: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """{metric: {series: value}} -> one panel per metric, one bar per series."""
    return {metric: {name: {metric: value} for name, value in values.items()}
            for metric, values in bars.items()}


def _verdict(run: RunData, base: RunData, near: dict[str, Any], metric: str, gap: float) -> str:
    line = (f"{run.label} ({run.summary['method']}): direct pruning's {metric} leads by {gap:+.4f} at "
            f"{100 * prunable_x(near):.1f}% pruned")
    noise = against_noise(base, prunable_x(near), metric, gap)
    if noise is None:
        return line + " (no seed replicates in the direct run: no noise estimate)."
    claim = {1: "the paper's claim (direct beats transfer) holds beyond", 0: "within",
             -1: "transfer wins beyond"}[noise[0]]
    return f"{line}: {claim} {noise[1]}."
