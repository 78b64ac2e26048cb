"""The latency figure draws the bench rows' own numbers, marks a failed engine on its line instead
of leaving it out, and keeps its legend off the marks (beside the panel)."""
from __future__ import annotations

from compress.report import plots

ROWS = [
    {"run": "r", "graph": "model.onnx", "engine": "onnxruntime", "batch": 1, "status": "ok",
     "p50_ms": 5.0, "p90_ms": 6.0, "p99_ms": 9.5},
    {"run": "r", "graph": "model.onnx", "engine": "deepsparse", "batch": 1, "status": "failed",
     "p50_ms": None, "reason": "compile crashed"},
    {"run": "r", "graph": "pipeline", "engine": "deepsparse", "batch": 1, "status": "ok",
     "p50_ms": 2.0, "p90_ms": 2.5, "p99_ms": 3.0},
]


def _drawn(monkeypatch, tmp_path):
    seen = {}
    save = plots.save_figure

    def capture(fig, out_png, dpi=100):
        seen["fig"] = fig
        return save(fig, out_png, dpi)

    monkeypatch.setattr(plots, "save_figure", capture)
    out = plots.plot_latency(ROWS, tmp_path / "latency.png")
    assert out.stat().st_size > 0
    return seen["fig"]


def test_bars_and_marks_are_the_rows_numbers(monkeypatch, tmp_path):
    fig = _drawn(monkeypatch, tmp_path)
    first, second = fig.axes
    assert [p.get_width() for p in first.patches] == [5.0]
    assert [p.get_width() for p in second.patches] == [2.0]
    marks = [list(line.get_xdata()) for line in first.lines if len(line.get_xdata())]
    assert marks == [[6.0], [9.5]]  # p90, p99 of the one row that ran


def test_a_failed_engine_is_marked_on_its_line(monkeypatch, tmp_path):
    fig = _drawn(monkeypatch, tmp_path)
    first = fig.axes[0]
    texts = [t for t in first.texts if "failed" in t.get_text()]
    assert [t.get_text() for t in texts] == ["failed: compile crashed"]
    assert texts[0].get_position()[1] == 1  # the second line of the panel, its own tick
    assert [t.get_text() for t in first.get_yticklabels()][1] == "r | deepsparse | batch 1"


def test_the_legend_covers_no_mark(monkeypatch, tmp_path):
    fig = _drawn(monkeypatch, tmp_path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        panel = ax.get_window_extent(renderer)
        assert legend.x0 >= panel.x1  # beside the panel, not over it
        assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"p90", "p99"}
