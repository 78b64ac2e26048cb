"""Notes a run would repeat are logged once: MACs (the ticket's count, not the report's
counting pass) and "AMP requested on cpu" (not every round and epoch)."""
from __future__ import annotations

import logging

import torch

from compress.models.build import build_model
from compress.training import loop
from compress.evaluate.analysis.macs import count_macs


def _macs_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.INFO and r.getMessage().startswith("MACs")]


def test_macs_logged_once_for_the_stage_and_report_passes(caplog):
    torch.manual_seed(0)
    model = build_model("maskrcnn", "tiny", num_classes=3, min_size=64, max_size=64).eval()
    mask = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters()
            if name.endswith("weight") and p.dim() > 1}
    caplog.set_level(logging.DEBUG)
    count_macs(model, 64, mask)   # the MACs stage: the ticket with its mask
    count_macs(model, 64)         # the report: per-layer MACs, no mask
    assert len(_macs_lines(caplog)) == 1


def test_amp_on_cpu_noted_once_over_rounds_and_epochs(caplog, monkeypatch):
    monkeypatch.setattr(loop, "_AMP_NOTED", set())
    caplog.set_level(logging.INFO)
    results = [loop.use_amp(True, torch.device("cpu")) for _ in range(5)]
    assert results == [False] * 5
    notes = [r for r in caplog.records if "AMP requested" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.WARNING
    assert loop.use_amp(False, torch.device("cpu")) is False
