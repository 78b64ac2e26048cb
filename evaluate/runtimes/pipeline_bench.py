"""End-to-end latency of a detector on images: the full graph on ONNX Runtime against the
partitioned deployment on DeepSparse, under the shared benchmark protocol, with a per-part
breakdown. Rows carry `"graph": "pipeline"`."""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from compress.core.errors import ModelFileError
from compress.evaluate.engines import DEPLOYMENT, ENGINES, FULL_GRAPH, OPENVINO_ENGINES, PIPELINE_ENGINES
from compress.evaluate.runtimes.deepsparse_server import DeepSparseFailed
from compress.evaluate.runtimes.pipeline import OnnxDetector
from compress.evaluate.runtimes.openvino_engine import OpenVinoDetector, openvino_missing_reason
from compress.evaluate.runtimes.pipeline import DeployedDetector, on_canvas, read_manifest
from compress.evaluate.runtimes.protocol import interleaved, stats
from compress.evaluate.runtimes.ort import EngineUnavailable, physical_cores


def _row(engine: str, status: str, cores: int, **fields: Any) -> dict[str, Any]:
    return {"engine": engine, "graph": "pipeline", "batch": 1, "status": status, "cores": cores,
            "p50_ms": None, "p90_ms": None, "p99_ms": None, "parts": {}, **fields}


def full_graph_on_canvas(export_dir: str | os.PathLike, engine: str = "onnxruntime", *,
                         threads: int | None = None, spinning: bool = True,
                         source: Path | None = None,
                         score_threshold: float | None = None) -> Callable[[torch.Tensor], dict]:
    """The exported full graph of an export folder (or `source`, another model file) as image ->
    outputs on the deployment's canvas, outputs mapped back (only those scoring >=
    `score_threshold`): it sees exactly the pixels the deployment sees. OpenVINO engines compile
    it at the canvas size; any other engine runs it on ONNX Runtime."""
    manifest = read_manifest(export_dir)
    full = source or manifest.source_path
    height, width = manifest.canvas.height, manifest.canvas.width
    if engine in OPENVINO_ENGINES:
        _require_openvino()
        detector: Any = OpenVinoDetector(full, height, width, engine=engine, threads=threads or 1)
    else:
        detector = OnnxDetector(full, threads=threads, spinning=spinning)
    return on_canvas(detector, height, width, score_threshold=score_threshold)


def _require_openvino() -> None:
    missing = openvino_missing_reason()
    if missing:
        raise EngineUnavailable(missing)


def _detector(export_dir: Path, engine: str, cores: int, runner: str,
              source: Path | None = None) -> Any:
    if runner == FULL_GRAPH:
        return full_graph_on_canvas(export_dir, engine, threads=cores, spinning=False,
                                    source=source)
    if engine in OPENVINO_ENGINES:
        _require_openvino()
    return DeployedDetector(export_dir, engine=engine, threads=cores)


def _runner(target: tuple) -> str:
    """A target is (folder, engine) or (folder, engine, runner); an engine runs what the registry
    says (onnxruntime the full graph) unless the runner says otherwise ("deployment": the
    partitioned runner, every part on ORT for onnxruntime)."""
    if len(target) > 2:
        return target[2]
    engine = ENGINES.get(target[1])
    return engine.runs if engine is not None and engine.deploys else DEPLOYMENT


def bench_pipelines(targets: Mapping[str, tuple],
                    images: Sequence[torch.Tensor], *, warmup: int = 2, iterations: int = 10,
                    repeats: int = 1, cores: int | None = None) -> dict[str, dict[str, Any]]:
    """A row per target label -> (export folder, engine[, runner[, model file]]), every target
    interleaved call by call.

    onnxruntime runs the exported full graph, deepsparse the deployment (DeepSparse parts in its
    child, glue on ONNX Runtime), both on the same canvas; (folder, "onnxruntime", "deployment")
    runs the deployment with every part on ONNX Runtime; engine "openvino" / "openvino-fp32"
    (the optional extra) runs the full graph, or with runner "deployment" the same partition
    with OpenVINO in DeepSparse's place. A model file (4th element, full_graph runner) times
    that file instead of the folder's full graph on the folder's canvas (e.g. a dense INT8 model
    another tool wrote: an OpenVINO IR .xml, an ONNX Runtime quantized .onnx). Each row names its
    `runner`. A crash or timeout is a failed row.
    """
    cores = cores or physical_cores()
    plans = {label: (Path(t[0]), t[1], _runner(t), Path(t[3]) if len(t) > 3 else None)
             for label, t in targets.items()}
    runners, failures, opened = {}, {}, {}
    for label, (folder, engine, runner, source) in plans.items():
        try:
            detector = _detector(folder, engine, cores, runner, source)
        except (DeepSparseFailed, EngineUnavailable, ModelFileError) as err:  # a failed row
            failures[label] = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            continue
        if isinstance(detector, DeployedDetector):
            opened[label] = detector
        runners[label] = (lambda d=detector, c=itertools.cycle(images): d(next(c)))
    parts: dict[str, dict[str, list[float]]] = {label: {} for label in runners}

    def collect(label: str) -> None:
        detector = opened.get(label)
        for part, ms in (detector.timings_ms if detector else {}).items():
            parts[label].setdefault(part, []).append(ms)

    try:
        latencies, errors = interleaved(runners, warmup=warmup, iterations=iterations,
                                        repeats=repeats, after_call=collect)
    finally:
        for detector in opened.values():
            detector.close()
    rows = {}
    for label, (_, engine, runner, _) in plans.items():
        reason = failures.get(label) or errors.get(label)
        if reason or not latencies.get(label):
            rows[label] = _row(engine, "failed", cores, runner=runner,
                               reason=reason or "no timed call")
            continue
        summary = stats(latencies[label])
        breakdown = ({p: float(np.median(v)) for p, v in parts[label].items()} if label in opened
                     else {"full_graph": summary["p50_ms"]})
        compiled = opened[label].supported_op_fraction if label in opened else {}
        rows[label] = _row(engine, "ok", cores, **summary, parts=breakdown,
                           part_engines=(opened[label].part_engines if label in opened
                                         else {"full_graph": "onnxruntime"}),
                           runner=runner,
                           items_per_s=1000.0 / summary["mean_ms"],
                           supported_op_fraction=min((c["supported_op_fraction"]
                                                      for c in compiled.values()), default=None),
                           deepsparse_engines=compiled or None)
    return rows


def bench_pipeline(export_dir: str | os.PathLike, images: Sequence[torch.Tensor], *,
                   engines: Sequence[str] = PIPELINE_ENGINES, warmup: int = 2,
                   iterations: int = 10, repeats: int = 1,
                   cores: int | None = None) -> list[dict[str, Any]]:
    """One row per engine for one export folder: the whole detector, engines interleaved."""
    targets = {e: (export_dir, e) for e in engines if e in PIPELINE_ENGINES}
    rows = bench_pipelines(targets, images, warmup=warmup, iterations=iterations,
                           repeats=repeats, cores=cores)
    return list(rows.values())


def outside_deepsparse_share(row: Mapping[str, Any]) -> float | None:
    """The fraction of a deployed call spent outside DeepSparse (ORT glue, torch parts, canvas
    and restore), from the row's median time per part."""
    parts, engines = row.get("parts") or {}, row.get("part_engines") or {}
    total = sum(parts.values())
    if not total or not engines:
        return None
    return sum(ms for name, ms in parts.items() if engines.get(name) != "deepsparse") / total


def speedups(full_graph_ms: float | None, dense_ms: float | None,
             ticket: Mapping[str, Any]) -> dict[str, float | None]:
    """The two ratios of a deployed ticket, side by side: `end_to_end` = ORT's full graph /
    the ticket on DeepSparse (what a user gains over plain ONNX Runtime) and `sparsity_gain` =
    the dense model on the same partition and engine / the ticket (what the zeros buy), with
    `outside_deepsparse` (the share of the ticket's call that zeros cannot shrink)."""
    p50 = ticket.get("p50_ms") if ticket.get("status") == "ok" else None
    return {"end_to_end": full_graph_ms / p50 if p50 and full_graph_ms else None,
            "sparsity_gain": dense_ms / p50 if p50 and dense_ms else None,
            "outside_deepsparse": outside_deepsparse_share(ticket) if p50 else None}


def describe_speedups(found: Mapping[str, float | None]) -> tuple[str, str | None]:
    """The two ratios in one sentence, and a second one when the deployed ticket is slower
    than ONNX Runtime's full graph (None otherwise); the console and the report both say these."""
    def x(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"
    share = found.get("outside_deepsparse")
    share_text = "-" if share is None else f"{share:.0%}"
    line = (f"end to end {x(found.get('end_to_end'))} (ONNX Runtime full graph / DeepSparse "
            f"ticket), sparsity's own gain {x(found.get('sparsity_gain'))} (the dense model on the "
            f"same partition and engine / ticket); {share_text} of the ticket's call is outside "
            "DeepSparse (glue, RoI pooling, mask pasting)")
    slower = found.get("end_to_end") is not None and found["end_to_end"] < 1.0
    warning = (f"the DeepSparse ticket is slower than ONNX Runtime's full graph here "
               f"({x(found['end_to_end'])}): {share_text} of its call is glue outside DeepSparse, "
               "and at this image size there is little convolution to accelerate") if slower else None
    return line, warning
