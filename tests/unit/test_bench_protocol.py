"""The shared benchmark protocol: runners take turns, failures are rows, stats and machine info."""
from __future__ import annotations

import pytest

from compress.evaluate.runtimes import protocol
from compress.evaluate.runtimes.protocol import finish, interleaved, machine, stats


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


def test_finish_flags_other_work_by_cpu_time(monkeypatch):
    """Other processes' CPU time during the run (machine busy time minus this process tree's)
    flags the table; the benchmark's own work does not."""
    busy = iter([100.0, 101.0])  # the machine: 1 CPU second busy during the run
    own = iter([5.0, 5.95])  # of which this process: 0.95 s
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(protocol, "_busy_cpu_s", lambda: next(busy))
    monkeypatch.setattr(protocol, "_own_cpu_s", lambda: next(own))
    monkeypatch.setattr(protocol.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(protocol.os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # stale: not used
    info = finish(machine(2))
    assert info["other_cpu_cores"] == pytest.approx(0.05) and info["under_load"] is False
    assert "_clock" not in info
    busy, own, clock = iter([100.0, 102.0]), iter([5.0, 5.5]), iter([0.0, 1.0])
    info = finish(machine(2))
    assert info["other_cpu_cores"] == pytest.approx(1.5) and info["under_load"] is True
