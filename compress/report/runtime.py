"""Report section for runtime-aware tickets: where each run put its zeros, and the DeepSparse
latency the per-layer profile predicts for the exported backbone against the measured one."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from compress.lottery.profile import predicted_latency_ms
from compress.recipe.load import load_resolved
from compress.report import plots
from compress.report.page import Missing, Section, fmt
from compress.report.run_data import RunData, figure, read_json, table

BACKBONE_GRAPH = "backbone.onnx"  # ResNet body + FPN: the profiled `backbone.*` layers


def _ticket_layers(run: RunData) -> dict[str, float]:
    path = run.folder.round(run.last_round).sparsity
    if not path.is_file():
        return {}
    return {name: entry["sparsity"] for name, entry in read_json(path)["layers"].items()}


def _profile(runs: list[RunData]) -> Optional[dict[str, Any]]:
    """The first run's profile.json (a global run of the same model can borrow it)."""
    for run in runs:
        if (run.root / "profile.json").is_file():
            return read_json(run.root / "profile.json")
    return None


def _measured_ms(run: RunData) -> Optional[float]:
    path = run.root / "bench" / "bench.json"
    bench = read_json(path) if path.is_file() else run.summary.get("bench") or []
    for row in bench:
        if (row.get("engine") == "deepsparse" and row.get("status") == "ok"
                and (row.get("graph") or row.get("model")) == BACKBONE_GRAPH and row.get("batch", 1) == 1):
            return row.get("p50_ms")
    return None


def _distribution(run: RunData) -> str:
    """The run's `lottery.distribution`, from the resolved recipe it ran."""
    recipe = run.root / "recipe.yaml"
    return load_resolved(recipe).lottery.distribution if recipe.is_file() else "?"


def sec_runtime(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    spreads = {f"{run.label} ({_distribution(run)})": _ticket_layers(run) for run in runs}
    spreads = {label: layers for label, layers in spreads.items() if layers}
    profile = _profile(runs)
    if profile is None and not any("runtime" in label for label in spreads):
        raise Missing("no run used lottery.distribution: runtime (no profile.json)")
    if spreads:
        path = plots.plot_layer_sparsity({k: list(v.items()) for k, v in spreads.items()},
                                         plot_dir / "layer_sparsity.png")
        figure(section, path, "Per-layer sparsity of each ticket (model order)")
    if profile is None:
        return
    rows = []
    for run in runs:
        layers = _ticket_layers(run)
        backbone = {n: s for n, s in layers.items() if n.startswith("backbone.")}
        predicted = sum(predicted_latency_ms(profile, backbone).values()) if backbone else None
        measured = _measured_ms(run)
        ratio = predicted / measured if predicted and measured else None
        rows.append([run.label, _distribution(run), fmt(run.rounds[-1].get("prunable_sparsity")),
                     fmt(predicted, 2), fmt(measured, 2), fmt(ratio, 3)])
    key = profile.get("key", {})
    table(section, ["run", "distribution", "prunable sparsity", "predicted ms (profile sum)",
                    "measured DeepSparse ms", "predicted / measured"], rows,
          f"DeepSparse latency of {BACKBONE_GRAPH}: per-layer profile sum at the ticket's spread vs "
          f"the bench stage's p50 ({key.get('cores', '?')} cores, {key.get('image_size', '?')} px, "
          f"{key.get('cpu', '?')} {','.join(f for f, on in key.get('flags', {}).items() if on)})")
    section.text.append("The profile sums the layers timed alone; the whole graph adds element-wise "
                        "work and saves fusion (benchmarks/bench_runtime_aware.py measures how close "
                        "the sum comes for several spreads of R-50 FPN).")
