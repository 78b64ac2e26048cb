"""The report's Appendix A section: each transfer run against the direct run's round at matched
sparsity, its numbers (table, bars, verdict) taken from the runs' records."""
from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from compress.report import plots
from compress.report.page import Missing, Section
from compress.report.run_data import RunData
from compress.report.transfer_section import sec_transfer


def _run(tmp: Path, label: str, method: str, rounds: list[dict]) -> RunData:
    return RunData(tmp / label, label, {"method": method}, rounds)


def _r(index: int, sparsity: float, bbox: float, **extra) -> dict:
    return {"round": index, "sparsity": sparsity, "prunable_sparsity": sparsity,
            "metrics": {"bbox_mAP": bbox}, **extra}


@pytest.fixture()
def runs(tmp_path):
    direct = _run(tmp_path, "study", "imp", [
        _r(0, 0.0, 0.44, replicates={"seed_1": {"bbox_mAP": 0.42}, "seed_2": {"bbox_mAP": 0.45}}),
        _r(1, 0.2, 0.43), _r(8, 0.8322, 0.38)])
    mt = _run(tmp_path, "mt", "mask_transfer", [_r(0, 0.8321, 0.30)])
    tt = _run(tmp_path, "tt", "transfer_ticket", [_r(0, 0.8323, 0.41)])
    return direct, mt, tt


def test_transfer_vs_direct_from_the_records(runs, tmp_path, monkeypatch):
    drawn = {}
    real = plots.plot_grouped_bars

    def capture(groups, out_png, *args):
        drawn.update(groups)
        return real(groups, out_png, *args)

    monkeypatch.setattr(plots, "plot_grouped_bars", capture)
    section = Section("transfer", "Transfer")
    sec_transfer(section, list(runs), tmp_path)
    assert (tmp_path / "transfer_vs_direct.png").stat().st_size > 1000
    bars = {name: v["bbox_mAP"] for name, v in drawn["bbox_mAP"].items()}
    assert bars == {"dense": 0.44, "direct (round 8)": 0.38, "mask_transfer": 0.30,
                    "transfer_ticket": 0.41}
    rows = section.tables[0].rows
    assert [r[0] for r in rows] == ["mt", "tt"]
    assert float(rows[0][-1]) == pytest.approx(0.08) and float(rows[1][-1]) == pytest.approx(-0.03)
    two_sd = 2 * statistics.stdev([0.44, 0.42, 0.45])
    mt_line, tt_line = section.text
    assert "leads by +0.0800" in mt_line and "holds beyond" in mt_line
    assert f"2 sd = {two_sd:.4f}" in mt_line
    assert "leads by -0.0300" in tt_line and ("within" in tt_line) == (0.03 < two_sd)


def test_unmatched_sparsity_is_said_not_compared(runs, tmp_path):
    direct, mt, _ = runs
    far = _run(tmp_path, "far", "mask_transfer", [_r(0, 0.5, 0.3)])
    section = Section("transfer", "Transfer")
    sec_transfer(section, [direct, mt, far], tmp_path)
    assert any("far: no round of study within" in line for line in section.text)
    assert [r[0] for r in section.tables[0].rows] == ["mt"]


def test_missing_inputs(runs, tmp_path):
    direct, mt, _ = runs
    with pytest.raises(Missing, match="no Mask Transfer"):
        sec_transfer(Section("t", "t"), [direct], tmp_path)
    with pytest.raises(Missing, match="direct-pruning"):
        sec_transfer(Section("t", "t"), [mt], tmp_path)
