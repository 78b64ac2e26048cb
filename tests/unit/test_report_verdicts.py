"""The one-line verdicts the report gives under the supplement's figures (Appendix B, C), from the
numbers the figures draw."""
from __future__ import annotations

from compress.report.sections import tide_verdict
from compress.evaluate.analysis.convergence import convergence_verdict


def test_tide_verdict_same_and_different_top_errors():
    dense = {"Cls": 5.0, "Loc": 9.0, "Both": 0.5, "Dupe": 0.1, "Bkg": 2.0, "Miss": 7.0, "FalsePos": 30.0}
    ticket = {"Cls": 6.0, "Loc": 8.0, "Both": 0.5, "Dupe": 0.1, "Bkg": 2.0, "Miss": 9.5, "FalsePos": 1.0}
    line = tide_verdict({"dense": dense, "ticket": ticket})
    assert "dense Loc, Miss; ticket Miss, Loc" in line and "the same kinds" in line
    ticket["Bkg"] = 20.0
    assert "not the same two" in tide_verdict({"dense": dense, "ticket": ticket})
    assert tide_verdict({"ticket": ticket}) is None


def test_convergence_verdict_counts_shared_epochs():
    dense = [(1.0, 0.9), (2.0, 0.7), (3.0, 0.6)]
    ticket = [(1.0, 0.8), (2.0, 0.72), (3.0, 0.55), (4.0, 0.5)]
    line = convergence_verdict(dense, ticket, ("dense", "round 1"))
    assert line.startswith("round 1 below dense at 2 of 3 shared epochs")
    assert "epoch 1: 0.8000 vs 0.9000" in line and "last: 0.5500 vs 0.6000" in line
    assert line.endswith("converges faster holds here")
    assert "does not hold" in convergence_verdict(ticket, dense)
    assert convergence_verdict(dense, [(9.0, 0.1)]) is None
