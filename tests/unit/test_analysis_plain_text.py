"""The analysis figures draw a category or run named `a$b$c` as written: no text reaches
matplotlib's mathtext parser (ap_deltas, tide, convergence, keypoint_errors)."""
from __future__ import annotations

import matplotlib
import matplotlib.mathtext
import pytest

from compress.evaluate.analysis import tide
from compress.evaluate.analysis.ap_deltas import plot_ap_deltas
from compress.evaluate.analysis.convergence import plot_convergence
from compress.evaluate.analysis.keypoint_errors import write_keypoint_report

NAME = "a$b$c"


@pytest.fixture
def no_mathtext(monkeypatch):
    matplotlib.use("Agg")

    def refuse(*args, **kwargs):
        raise AssertionError(f"mathtext parsed {args[1:2]}")
    monkeypatch.setattr(matplotlib.mathtext.MathTextParser, "parse", refuse)


def test_ap_deltas_plot(no_mathtext, tmp_path):
    deltas = {"size": {"APs": -0.1, "APm": 0.0, "APl": None},
              "per_category": {NAME: -0.05, "b": 0.02}}
    assert plot_ap_deltas(deltas, tmp_path / "d.png", title=f"{NAME} - dense").stat().st_size > 0


def test_convergence_plot(no_mathtext, tmp_path):
    out = plot_convergence({"dense": [(1, 2.0), (2, 1.5)], NAME: [(1, 2.1)]}, tmp_path / "c.png",
                           title=NAME)
    assert out.stat().st_size > 0


def test_tide_bar_chart(no_mathtext, tmp_path):
    zeros = {"main": {e: 0.5 for e in tide.MAIN_ERRORS},
             "special": {e: 0.1 for e in tide.SPECIAL_ERRORS}}
    tide._bar_chart({NAME: zeros, "dense": zeros}, f"TIDE bbox: {NAME}", tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0


def test_keypoint_report_figures(no_mathtext, tmp_path):
    write_keypoint_report({"fractions": {NAME: 0.5, "good": 0.5}, "ap_gain": {NAME: 0.1}}, tmp_path)
    assert (tmp_path / "keypoint_ap_gain.png").stat().st_size > 0
