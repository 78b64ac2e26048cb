"""What a latency figure was measured on: CPU model, the vector-instruction flags that decide
DeepSparse's kernels (AVX2 / AVX-512 / VNNI / AMX), cores, load average."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    return model, flags


def cpu_identity() -> dict[str, Any]:
    """{"cpu": model name, "flags": the flags of interest this CPU has} (stable across runs)."""
    model, flags = _cpuinfo()
    return {"cpu": model, "flags": [f for f in FLAGS_OF_INTEREST if f in flags]}


def machine_record(cores: int) -> dict[str, Any]:
    """cpu_identity() plus cores used, logical CPUs and the 1/5/15-min load average now."""
    return {**cpu_identity(), "cores": cores, "logical_cpus": os.cpu_count(),
            "load_avg": list(os.getloadavg())}


def loaded(load_avg_1min: float, cores: int) -> bool:
    """True when other work shared the cores (figures pessimistic and noisy: flag them)."""
    return load_avg_1min > cores + 0.5
