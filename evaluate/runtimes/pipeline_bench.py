"""End-to-end latency of a detector on images: the full graph on ONNX Runtime against the
partitioned deployment on DeepSparse, under the shared benchmark protocol, with a per-part
breakdown. Rows carry `"graph": "pipeline"`."""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from evaluate.runtimes.deepsparse_server import DeepSparseFailed
from evaluate.runtimes.onnx_predict import OnnxDetector
from evaluate.runtimes.pipeline import DeployedDetector, on_canvas, read_manifest
from evaluate.runtimes.protocol import interleaved, stats
from evaluate.runtimes.ort import physical_cores

PIPELINE_ENGINES = ("onnxruntime", "deepsparse")


def _row(engine: str, status: str, cores: int, **fields: Any) -> dict[str, Any]:
    return {"engine": engine, "graph": "pipeline", "batch": 1, "status": status, "cores": cores,
            "p50_ms": None, "p90_ms": None, "p99_ms": None, "parts": {}, **fields}


def _runners(export_dir: Path, engines: Sequence[str], images: Sequence[torch.Tensor],
             cores: int) -> tuple[dict[str, Any], dict[str, str], list[Any]]:
    manifest = read_manifest(export_dir)
    canvas = manifest["canvas"]
    runners, failures, opened = {}, {}, []
    for engine in engines:
        cycle = itertools.cycle(images)
        if engine == "onnxruntime":
            full = Path(manifest["folder"]).parent / manifest["source"]
            detector = on_canvas(OnnxDetector(full, threads=cores, spinning=False),
                                 canvas["height"], canvas["width"])
        else:
            try:
                detector = DeployedDetector(export_dir, engine=engine, threads=cores)
            except DeepSparseFailed as err:
                failures[engine] = str(err)
                continue
            opened.append(detector)
        runners[engine] = (lambda d=detector, c=cycle: d(next(c)))
    return runners, failures, opened


def bench_pipeline(export_dir: str | os.PathLike, images: Sequence[torch.Tensor], *,
                   engines: Sequence[str] = PIPELINE_ENGINES, warmup: int = 2,
                   iterations: int = 10, repeats: int = 1,
                   cores: int | None = None) -> list[dict[str, Any]]:
    """One row per engine: the whole detector, image in -> detections out, engines interleaved.

    onnxruntime runs the exported full graph, deepsparse the deployment (DeepSparse parts in its
    child, glue on ONNX Runtime), both on the same canvas. A crash or timeout is a failed row.
    """
    cores = cores or physical_cores()
    engines = [e for e in engines if e in PIPELINE_ENGINES]
    runners, failures, opened = _runners(Path(export_dir), engines, images, cores)
    parts: dict[str, dict[str, list[float]]] = {engine: {} for engine in runners}
    by_name = {getattr(d, "engine", None): d for d in opened}

    def collect(engine: str) -> None:
        detector = by_name.get(engine)
        for part, ms in (detector.timings_ms if detector else {}).items():
            parts[engine].setdefault(part, []).append(ms)

    try:
        latencies, errors = interleaved(runners, warmup=warmup, iterations=iterations,
                                        repeats=repeats, after_call=collect)
    finally:
        for detector in opened:
            detector.close()
    rows = []
    for engine in engines:
        reason = failures.get(engine) or errors.get(engine)
        if reason or not latencies.get(engine):
            rows.append(_row(engine, "failed", cores, reason=reason or "no timed call"))
            continue
        breakdown = {p: float(np.median(v)) for p, v in parts.get(engine, {}).items()}
        if engine == "onnxruntime":
            breakdown = {"full_graph": stats(latencies[engine])["p50_ms"]}
        supported = by_name[engine].supported_op_fraction if engine in by_name else None
        rows.append(_row(engine, "ok", cores, **stats(latencies[engine]), parts=breakdown,
                         items_per_s=1000.0 / stats(latencies[engine])["mean_ms"],
                         supported_op_fraction=supported))
    return rows
