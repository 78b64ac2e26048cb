"""The shared benchmark protocol: runners take turns, failures are rows, stats and machine info."""
from __future__ import annotations

import pytest

from evaluate.runtimes import protocol
from evaluate.runtimes.protocol import interleaved, machine, stats


def test_runners_take_turns_after_their_warmup():
    calls: list[str] = []
    latencies, errors = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                    warmup=2, iterations=3)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert {k: len(v) for k, v in latencies.items()} == {"a": 3, "b": 3} and errors == {}


def test_a_failing_runner_leaves_the_turn_with_its_reason():
    state = {"n": 0}

    def flaky():
        state["n"] += 1
        if state["n"] > 2:
            raise RuntimeError("child crashed")

    latencies, errors = interleaved({"ok": lambda: None, "flaky": flaky}, warmup=1, iterations=4)
    assert len(latencies["ok"]) == 4 and len(latencies["flaky"]) == 1
    assert errors == {"flaky": "RuntimeError: child crashed"}


def test_stats_known_values():
    result = stats([float(v) for v in range(1, 101)])
    assert result["p50_ms"] == pytest.approx(50.5) and result["p99_ms"] == pytest.approx(99.01)
    assert result["spread"] == pytest.approx((90.1 - 10.9) / 50.5) and result["samples"] == 100


def test_machine_records_flags_and_flags_load(monkeypatch):
    monkeypatch.setattr(protocol, "_cpu_model_and_flags", lambda: ("Test CPU", {"avx2", "avx512f"}))
    monkeypatch.setattr(protocol.os, "getloadavg", lambda: (8.0, 4.0, 2.0))
    info = machine(2)
    assert info["cpu"] == "Test CPU" and info["cores_used"] == 2
    assert info["flags"] == {"avx2": True, "avx512": True, "vnni": False}
    assert info["under_load"] is True and info["load_avg_before"] == [8.0, 4.0, 2.0]
    monkeypatch.setattr(protocol.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert machine(2)["under_load"] is False
