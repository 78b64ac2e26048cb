"""Per-size and per-category AP deltas between two runs (dense vs ticket): table and plot."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compress.evaluate.analysis.figures import save_plain

SIZE_KEYS = ("APs", "APm", "APl")
OVERALL_KEYS = ("AP", "AP50", "AP75")


def _stats(metrics: Mapping[str, Any], iou_type: str) -> Mapping[str, Any]:
    """Accept either one coco_stats dict or a metrics.json dict {iou_type: stats}."""
    if "AP" in metrics:
        return metrics
    if iou_type not in metrics:
        raise KeyError(f"metrics hold no {iou_type!r} entry (have {sorted(metrics)})")
    return metrics[iou_type]


def _delta(a: Any, b: Any) -> float | None:
    """b - a; None where either side is missing or -1 (pycocotools' 'no ground truth')."""
    if a is None or b is None or a < 0 or b < 0:
        return None
    return float(b) - float(a)


def ap_deltas(metrics_a: Mapping[str, Any], metrics_b: Mapping[str, Any],
              iou_type: str = "bbox") -> dict[str, Any]:
    """Deltas b - a (ticket - dense) in AP units [0, 1]: overall, per size, per category.

    Returns {"overall": {AP, AP50, AP75}, "size": {APs, APm, APl}, "per_category": {name: delta}};
    a category with no GT (AP -1) on either side, or missing on one side, gets None.
    """
    a, b = _stats(metrics_a, iou_type), _stats(metrics_b, iou_type)
    cats_a, cats_b = a.get("per_category", {}), b.get("per_category", {})
    return {
        "overall": {k: _delta(a.get(k), b.get(k)) for k in OVERALL_KEYS},
        "size": {k: _delta(a.get(k), b.get(k)) for k in SIZE_KEYS},
        "per_category": {name: _delta(cats_a.get(name), cats_b.get(name))
                         for name in sorted(set(cats_a) | set(cats_b))},
    }


def plot_ap_deltas(deltas: Mapping[str, Any], out_png: str | os.PathLike,
                   title: str = "ticket - dense") -> Path:
    """Two panels: AP delta per object size, and per category (sorted, worst first)."""
    from matplotlib.figure import Figure

    cats = sorted(((n, v) for n, v in deltas["per_category"].items() if v is not None),
                  key=lambda item: item[1])
    fig = Figure(figsize=(10, max(3.5, 0.25 * len(cats) + 1)))
    ax_size, ax_cat = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    sizes = [(k, v) for k, v in deltas["size"].items() if v is not None]
    ax_size.bar([k for k, _ in sizes], [100 * v for _, v in sizes],
                color=["#c44e52" if v < 0 else "#55a868" for _, v in sizes])
    ax_size.axhline(0, color="black", linewidth=0.8)
    ax_size.set_ylabel("AP delta (points)")
    ax_size.set_title("by object size")
    ax_cat.barh([n for n, _ in cats], [100 * v for _, v in cats],
                color=["#c44e52" if v < 0 else "#55a868" for _, v in cats])
    ax_cat.axvline(0, color="black", linewidth=0.8)
    ax_cat.set_xlabel("AP delta (points)")
    ax_cat.set_title("by category")
    fig.suptitle(title)
    return save_plain(fig, out_png)
