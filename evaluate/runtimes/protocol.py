"""The one benchmark protocol behind every latency figure of the project.

Warm-up calls first; then the runners (engines, models) take turns call by call (A B A B ...,
never A A A B B B), so a change in machine load hits every runner alike; several repeats; p50 /
p90 / p99 and the spread per runner; threads pinned to the cores given. `machine()` records the
CPU model, its vector flags (AVX2 / AVX-512 / VNNI), the cores, the load average before and
after, and (`finish`) the CPU other processes took while the benchmark ran; a table measured
while the machine was busy carries `under_load: true`. Machines differ:
compare ratios from one run, never absolute times across runs.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Mapping

import numpy as np

LOAD_PER_CORE_LIMIT = 0.25  # 1-minute load average per core above which a figure is flagged
OTHER_WORK_LIMIT = 0.1  # cores of other work, averaged over the run, above which it is flagged
FLAGS = {"avx2": ("avx2",), "avx512": ("avx512f",), "vnni": ("avx512_vnni", "avx512vnni", "avx_vnni")}


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def pin_cores(cores: int) -> list[int]:
    """Pin this process (and children started later) to `cores` CPUs; the CPUs used."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    available = sorted(os.sched_getaffinity(0))
    chosen = available[:max(1, cores)]
    os.sched_setaffinity(0, chosen)
    return chosen


def cpu_identity() -> dict[str, Any]:
    """{"cpu": model name, "flags": {avx2, avx512, vnni: bool}}: what decides the kernels, stable
    across runs (a cache key for latency profiles)."""
    model, flags = _cpu_model_and_flags()
    return {"cpu": model, "flags": {name: any(f in flags for f in names) for name, names in FLAGS.items()}}


def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def machine(cores: int) -> dict[str, Any]:
    """CPU model, vector flags, cores and the load average now; `finish` adds what other work
    ran while the benchmark did."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {**cpu_identity(), "logical_cpus": os.cpu_count(), "cores_used": cores,
            "load_avg_before": [round(x, 2) for x in load],
            "under_load": load[0] > LOAD_PER_CORE_LIMIT * (os.cpu_count() or 1),
            "_clock": [time.monotonic(), _busy_cpu_s(), _own_cpu_s()]}


def finish(info: dict[str, Any]) -> dict[str, Any]:
    """Add the load average after the run and the CPU other work took meanwhile
    (`other_cpu_cores`: the machine's busy CPU time minus this process tree's, over the wall
    time); that share decides `under_load` (more than OTHER_WORK_LIMIT of a core). Without
    /proc/stat the load average before the run decides, as `machine` set it."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    info["load_avg_after"] = [round(x, 2) for x in load]
    start, busy, own = info.pop("_clock", [None, None, None])
    now = _busy_cpu_s()
    if start is not None and busy is not None and now is not None:
        wall = max(time.monotonic() - start, 1e-9)
        other = max(0.0, (now - busy) - (_own_cpu_s() - own)) / wall
        info["other_cpu_cores"] = round(other, 3)
        info["under_load"] = other > OTHER_WORK_LIMIT
    return info


def load_note(info: Mapping[str, Any]) -> str | None:
    """One line saying a measurement was taken under load (None when it was not): the cores of
    other work (or the load average, without /proc/stat) on this machine's CPUs."""
    if not info.get("under_load"):
        return None
    cpus = info.get("logical_cpus") or "?"
    other = info.get("other_cpu_cores")
    load = (info.get("load_avg_before") or ["?"])[0]
    busy = (f"{other:.2f} cores of other work" if other is not None
            else f"load average {load} before it started")
    return f"taken under load ({busy} on {cpus} CPUs): its latencies are noisy"


def stats(latencies_ms: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean and the spread ((p90 - p10) / p50) of one runner's latencies."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    p10, p50, p90, p99 = np.percentile(values, [10, 50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(values.mean()), "spread": float((p90 - p10) / p50) if p50 else 0.0,
            "samples": int(values.size)}


def interleaved(runners: Mapping[str, Callable[[], Any]], *, warmup: int = 2,
                iterations: int = 10, repeats: int = 1,
                after_call: Callable[[str], None] | None = None
                ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Time each runner, taking turns call by call: (latencies in ms, errors) per runner name.

    A runner that raises leaves the turn; its error is returned (a failed row, not the end of
    the benchmark). `after_call(name)` runs after each timed call (e.g. to collect a per-part
    breakdown).
    """
    latencies: dict[str, list[float]] = {name: [] for name in runners}
    errors: dict[str, str] = {}
    for name, runner in runners.items():
        try:
            for _ in range(warmup):
                runner()
        except Exception as err:  # a failing engine is a row, not the end of the benchmark
            errors[name] = f"{type(err).__name__}: {err}"
    for _ in range(repeats * iterations):
        for name, runner in runners.items():
            if name in errors:
                continue
            tick = time.perf_counter()
            try:
                runner()
            except Exception as err:
                errors[name] = f"{type(err).__name__}: {err}"
                continue
            latencies[name].append((time.perf_counter() - tick) * 1000.0)
            if after_call is not None:
                after_call(name)
    return latencies, errors
