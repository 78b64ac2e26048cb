"""`compress profile` reports progress per layer: n/N and an ETA (a log line when no terminal)."""
from __future__ import annotations

import logging
import re

from torch import nn

from compress.lottery import profile as profile_mod
from compress.lottery.profile import build_profile


class ThreeConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)  # b's twin: reuses its timing

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_profile_logs_each_layer_with_count_and_eta(tmp_path, monkeypatch, caplog):
    def fake_time(module, shape, grid, cores, warmup, iterations):
        return {"status": "ok", "latency_ms": [1.0 for _ in grid]}

    monkeypatch.setattr(profile_mod, "time_layer", fake_time)
    caplog.set_level(logging.INFO, logger="compress.lottery.profile")
    build_profile(ThreeConvs(), ["a.weight", "b.weight", "c.weight"], 16, 2, tmp_path / "p.json",
                  arch="x", backbone="y", progress=True)  # pytest's stderr is no terminal
    lines = [r.getMessage() for r in caplog.records]
    assert any("3 layers to time on DeepSparse (2 distinct)" in line for line in lines)
    steps = [line for line in lines if re.match(r"profile: layer \d/3 ", line)]
    assert [line.split()[2] for line in steps] == ["1/3", "2/3", "3/3"]
    assert all("ETA" in line for line in steps)
    assert "same as an earlier layer" in steps[2] and steps[2].endswith("ETA 0 s")
