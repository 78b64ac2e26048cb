"""The report's figures (matplotlib, no display needed): one line or bar group per run.

Every function takes plain series and a PNG path, writes the PNG atomically and returns the path.
Sparsity axes are in percent of all weights; sizes in MiB; MACs in GMACs.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.core.atomic import write_bytes

METRIC_TITLES = {"bbox_mAP": "box mAP", "segm_mAP": "mask mAP", "kp_mAP": "keypoint mAP",
                 "bbox_AP50": "box AP50"}
TIDE_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg")
COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_figure(fig: Any, out_png: Path, dpi: int = 100) -> Path:
    """Render to PNG bytes and write them atomically. Every text is drawn as written: labels
    carry user strings (run folder names, category names), and a `$` in one must not start
    matplotlib's mathtext (an unbalanced `$...$` raised a ValueError)."""
    import matplotlib
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"text.parse_math": False}):  # texts made while drawing (ticks)
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=dpi)
    write_bytes(out_png, buffer.getvalue())
    return Path(out_png)


def color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def plot_sparsity_vs_map(runs: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]],
                         metrics: Sequence[str], out_png: Path,
                         dense: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """One panel per metric: mAP against sparsity per round, one line per run; the run's dense
    model (`dense[run]`, its metrics) as a dashed horizontal line in the run's colour."""
    dense = dense or {}
    fig = new_figure(4.2 * len(metrics), 3.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for i, (label, points) in enumerate(runs.items()):
            pts = [(100 * s, m[metric]) for s, m in points if m.get(metric) is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", color=color(i), label=label)
            if dense.get(label, {}).get(metric) is not None:
                ax.axhline(dense[label][metric], linestyle="--", linewidth=1, color=color(i),
                           label=f"{label}: dense")
        ax.set_xlabel("sparsity (% of weights pruned)")
        ax.set_ylabel(METRIC_TITLES.get(metric, metric))
        ax.set_title(METRIC_TITLES.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def plot_size_macs(runs: Mapping[str, Mapping[str, Any]], out_png: Path) -> Path:
    """The supplement's Figure 4: disk size and MACs against sparsity, per round.

    Each run's entry: sparsity [..], dense_bytes, bound_bytes [..], export {name: (sparsity,
    bytes)} (measured files, may be empty), dense_macs (or None), effective_macs [..] (or None).
    """
    fig = new_figure(11, 4)
    ax_size, ax_macs = fig.subplots(1, 2)
    mib, gmac = 1024.0 ** 2, 1e9
    markers = {"onnx_bytes": "s", "gzip_bytes": "^", "sparse_onnx_bytes": "D", "compact_bytes": "*"}
    for i, (label, run) in enumerate(runs.items()):
        xs = [100 * s for s in run["sparsity"]]
        ax_size.axhline(run["dense_bytes"] / mib, color=color(i), linestyle="--", linewidth=1,
                        label=f"{label}: dense fp32")
        ax_size.plot(xs, [b / mib for b in run["bound_bytes"]], marker="o", color=color(i),
                     label=f"{label}: sparse bound (mask + nonzeros)")
        for name, (sparsity, size) in run.get("export", {}).items():
            ax_size.scatter([100 * sparsity], [size / mib], marker=markers.get(name, "x"),
                            color=color(i), s=50, label=f"{label}: {name.removesuffix('_bytes')} (file)")
        if run.get("effective_macs"):
            ax_macs.axhline(run["dense_macs"] / gmac, color=color(i), linestyle="--", linewidth=1,
                            label=f"{label}: dense")
            ax_macs.plot(xs, [m / gmac for m in run["effective_macs"]], marker="o", color=color(i),
                         label=f"{label}: effective")
    ax_size.set_ylim(bottom=0)
    ax_macs.set_ylim(bottom=0)
    for ax, ylabel, title in ((ax_size, "size (MiB)", "disk size"), (ax_macs, "GMACs", "compute")):
        ax.set_xlabel("sparsity (% of weights pruned)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def plot_latency(rows: Sequence[Mapping[str, Any]], out_png: Path) -> Path:
    """One panel per graph (each on its own scale): p50 latency bars per (run, engine, batch),
    coloured by engine, with p90 and p99 marks; a row that did not run (`status` not ok) keeps its
    line and says so in red instead of a bar. The legend sits outside the panel, beside it, so it
    covers no mark."""
    from matplotlib.patches import Patch

    graphs = list(dict.fromkeys(r["graph"] for r in rows))
    engines = sorted({r["engine"] for r in rows})
    heights = [0.45 * sum(r["graph"] == g for r in rows) + 1.0 for g in graphs]
    fig = new_figure(10, sum(heights) + 0.3)
    axes = fig.subplots(len(graphs), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, graph in zip(axes, graphs):
        mine = [r for r in rows if r["graph"] == graph]
        ran = [i for i, r in enumerate(mine) if r.get("status", "ok") == "ok" and r.get("p50_ms") is not None]
        runs = [mine[i] for i in ran]
        ax.barh(ran, [r["p50_ms"] for r in runs], color=[color(engines.index(r["engine"])) for r in runs])
        ax.plot([r.get("p90_ms") or r["p50_ms"] for r in runs], ran, "|", color="black", markersize=12)
        ax.plot([r.get("p99_ms") or r["p50_ms"] for r in runs], ran, "x", color="black")
        for i, r in enumerate(mine):
            if i not in ran:
                reason = str(r.get("reason") or "")
                ax.text(0.01, i, f"{r.get('status') or 'failed'}" + (f": {reason[:70]}" if reason else ""),
                        transform=ax.get_yaxis_transform(), va="center", fontsize=7, color="#b00000")
        ax.set_yticks(range(len(mine)), [f"{r['run']} | {r['engine']} | batch {r['batch']}" for r in mine],
                      fontsize=7)
        ax.set_ylim(len(mine) - 0.5, -0.5)
        ax.set_xlim(left=0)
        ax.set_title(graph, fontsize=9)
        ax.set_xlabel("latency per call (ms); bar = p50")
        ax.grid(axis="x", alpha=0.3)
        handles = [Patch(color=color(engines.index(e)), label=e) for e in engines
                   if any(r["engine"] == e for r in mine)]
        handles += [ax.plot([], [], "|", color="black", markersize=12, label="p90")[0],
                    ax.plot([], [], "x", color="black", label="p99")[0]]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_figure(fig, out_png)


def plot_round_series(runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], out_png: Path,
                      ylabel: str, title: str) -> Path:
    """Values per round: one line per (run, series); used for the early-bird and mask IoUs."""
    fig = new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    from matplotlib.ticker import MaxNLocator

    styles, markers = ("-", ":", "--", "-."), ("o", "s", "^", "D")
    for i, (label, series) in enumerate(runs.items()):
        for j, (name, points) in enumerate(series.items()):
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker=markers[j % len(markers)], linestyle=styles[j % len(styles)],
                        color=color(i), label=f"{label}: {name}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def plot_grouped_bars(groups: Mapping[str, Mapping[str, Mapping[str, float]]], out_png: Path,
                      ylabel: str, title: str) -> Path:
    """One panel per group (e.g. iou type); in it, bars per category (error type) and per series
    (dense, ticket) side by side."""
    fig = new_figure(max(6.0, 5.5 * len(groups)), 3.8)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (group, series) in zip(axes, groups.items()):
        categories = list(dict.fromkeys(k for values in series.values() for k in values))
        x = np.arange(len(categories))
        width = 0.8 / max(len(series), 1)
        for i, (name, values) in enumerate(series.items()):
            ax.bar(x + i * width - 0.4 + width / 2, [values.get(c, 0.0) for c in categories], width,
                   label=name, color=color(i))
        ax.set_xticks(x, categories, fontsize=8, rotation=20)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {group}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def tide_bar_groups(tide: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{name: {error: dAP}} from {name: {main, special}} (a tide.json entry per run name)."""
    return {name: {k: float({**entry.get("main", {}), **entry.get("special", {})}.get(k, 0.0))
                   for k in TIDE_ERRORS}
            for name, entry in tide.items()}


def plot_layer_sparsity(runs: Mapping[str, Sequence[tuple[str, float]]], out_png: Path) -> Path:
    """Per-layer sparsity of each run's ticket: one line per run over the layers in model order
    (global vs runtime-aware shows where each puts its zeros)."""
    layers = list(dict.fromkeys(name for series in runs.values() for name, _ in series))
    fig = new_figure(max(7.0, 0.18 * len(layers) + 2), 4.2)
    ax = fig.add_subplot()
    for i, (label, series) in enumerate(runs.items()):
        values = dict(series)
        ax.plot(range(len(layers)), [100 * values.get(n, np.nan) for n in layers], marker="o",
                markersize=3, color=color(i), label=label)
    short = [n.replace(".weight", "").replace("backbone.", "").replace("body.", "") for n in layers]
    ax.set_xticks(range(len(layers)), short, fontsize=6, rotation=90)
    ax.set_ylabel("sparsity of the layer (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def plot_ticket_vs_controls(ticket: Sequence[tuple[float, Mapping[str, Any]]],
                            controls: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]],
                            metrics: Sequence[str], out_png: Path,
                            dense: Mapping[str, Any] | None = None,
                            spread: Mapping[float, Mapping[str, tuple[float, float, int]]] | None = None
                            ) -> Path:
    """The lottery-ticket figure: per metric, mAP against prunable sparsity for the ticket (every
    round), each control (at its rounds) and the dense model as a dashed line; `spread`
    ({sparsity: {metric: (mean, sd, seeds)}}) draws mean +- one standard deviation as error bars
    (at sparsity 0 also a grey band around the dense line)."""
    fig = new_figure(4.2 * len(metrics), 3.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        series = {"ticket": ticket, **controls}
        for i, (label, points) in enumerate(series.items()):
            pts = [(100 * s, m[metric]) for s, m in points if m.get(metric) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if i == 0 else "s", color=color(i), label=label,
                        linewidth=2 if i == 0 else 1)
        if (dense or {}).get(metric) is not None:
            ax.axhline(dense[metric], linestyle="--", linewidth=1, color="#333333", label="dense")
        for i, (sparsity, stats) in enumerate(sorted((spread or {}).items())):
            if metric not in stats:
                continue
            mean, std, seeds = stats[metric]
            ax.errorbar([100 * sparsity], [mean], yerr=[std], fmt="D", color="#333333", capsize=4,
                        markersize=4, label=f"seed mean +- sd (n={seeds})" if i == 0 else None)
            if sparsity == 0:
                ax.axhspan(mean - std, mean + std, color="#999999", alpha=0.2)
        ax.set_xlabel("prunable sparsity (% pruned)")
        ax.set_ylabel(METRIC_TITLES.get(metric, metric))
        ax.set_title(f"{METRIC_TITLES.get(metric, metric)}: ticket vs controls")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_png)
