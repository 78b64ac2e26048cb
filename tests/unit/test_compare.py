"""AP deltas between two runs and the convergence plot."""
from __future__ import annotations

import json

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from compress.core.errors import DataError
from compress.evaluate.analysis.ap_deltas import ap_deltas, plot_ap_deltas
from compress.evaluate.analysis.convergence import load_metrics_jsonl, plot_convergence, val_loss_series

DENSE = {"AP": 0.40, "AP50": 0.60, "AP75": 0.42, "APs": 0.20, "APm": 0.45, "APl": 0.55,
         "per_category": {"person": 0.50, "kite": 0.30, "ghost": -1.0}}
TICKET = {"AP": 0.38, "AP50": 0.59, "AP75": 0.40, "APs": 0.15, "APm": 0.44, "APl": 0.56,
          "per_category": {"person": 0.49, "kite": 0.21, "ghost": -1.0, "new": 0.1}}


def test_ap_deltas_values():
    d = ap_deltas({"bbox": DENSE}, {"bbox": TICKET}, "bbox")
    assert d["size"]["APs"] == pytest.approx(-0.05)
    assert d["size"]["APl"] == pytest.approx(0.01)
    assert d["overall"]["AP"] == pytest.approx(-0.02)
    assert d["per_category"]["kite"] == pytest.approx(-0.09)
    assert d["per_category"]["ghost"] is None and d["per_category"]["new"] is None


def test_ap_deltas_missing_iou_type():
    with pytest.raises(KeyError):
        ap_deltas({"bbox": DENSE}, {"bbox": TICKET}, "segm")


def _bars(ax, horizontal: bool) -> list[tuple[str, float, str]]:
    """(label, plotted value, colour) of every bar of an axes, in plotting order."""
    labels = [t.get_text() for t in (ax.get_yticklabels() if horizontal else ax.get_xticklabels())]
    values = [p.get_width() if horizontal else p.get_height() for p in ax.patches]
    return [(label, value, to_hex(p.get_facecolor()))
            for label, value, p in zip(labels, values, ax.patches)]


def test_plot_ap_deltas_draws_the_deltas(tmp_path, monkeypatch):
    """The figure as saved: one bar per size and per category with a known value, in points,
    worst category first, red below zero and green above; categories without a delta left out."""
    saved = []
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig),
                                                                 real_savefig(fig, *a, **k))[1])
    out = plot_ap_deltas(ap_deltas(DENSE, TICKET), tmp_path / "deltas.png", title="t - d")
    assert out == tmp_path / "deltas.png" and out.read_bytes()[:4] == b"\x89PNG"
    (fig,) = saved
    ax_size, ax_cat = fig.axes
    red, green = "#c44e52", "#55a868"
    assert [(lab, round(v, 6), c) for lab, v, c in _bars(ax_size, horizontal=False)] == [
        ("APs", -5.0, red), ("APm", -1.0, red), ("APl", 1.0, green)]
    assert [(lab, round(v, 6), c) for lab, v, c in _bars(ax_cat, horizontal=True)] == [
        ("kite", -9.0, red), ("person", -1.0, red)]
    assert fig._suptitle.get_text() == "t - d"


def test_convergence(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"round": 0, "epoch": 0, "iteration": 5, "train_loss": 3.0},
             {"round": 0, "epoch": 0, "val_loss": 2.0}, {"round": 0, "epoch": 1, "val_loss": 1.5},
             {"round": 1, "epoch": 0, "val_loss": 2.1}, {"round": 1, "epoch": 1, "val_loss": 1.7},
             {"round": 1, "epoch": 1, "val_loss": 1.6}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    series = val_loss_series(load_metrics_jsonl(path))
    assert series == {"dense": [(0.0, 2.0), (1.0, 1.5)], "round 1": [(0.0, 2.1), (1.0, 1.6)]}
    assert plot_convergence(series, tmp_path / "conv.png").stat().st_size > 1000


def test_bad_metrics_jsonl(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1,\n')
    with pytest.raises(DataError, match="line 2"):
        load_metrics_jsonl(path)
    with pytest.raises(DataError):
        plot_convergence({}, tmp_path / "x.png")
