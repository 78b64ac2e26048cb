"""Latency benchmark of one ONNX file on ONNX Runtime (CPU, CUDA) and DeepSparse, side by side.

Every engine runs the same file on the same input shapes, so ratios are like for like. Inputs
are random, shaped from the graph's inputs (dynamic height / width take `image_size`). A graph
whose image input has no batch axis (the full R-CNN graph takes one 3 x H x W image) is run
`batch` times in sequence per timed item; its rows say so in `note`.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from compress.core.errors import ModelFileError
from compress.evaluate.engines import BENCH_ENGINES, DEEPSPARSE, ENGINES, ONNXRUNTIME, Engine
from compress.evaluate.runtimes.deepsparse import deepsparse_bench
from compress.evaluate.runtimes.ort import (EngineUnavailable, check_external_data, ort_session,
                                   physical_cores)
from compress.evaluate.runtimes.protocol import stats

log = logging.getLogger(__name__)

ROW_KEYS = ("engine", "batch", "status", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "spread",
            "items_per_s", "cores", "supported_op_fraction", "reason", "note", "model")
DEFAULT_IMAGE_SIZE = 512


@dataclass(frozen=True)
class GraphInput:
    """One graph input with the concrete shape used for benchmarking."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    dynamic: bool
    graph_dims: tuple[int | None, ...]


def graph_inputs(onnx_path: str | os.PathLike, batch: int = 1,
                 image_size: int | tuple[int, int] | None = None) -> tuple[list[GraphInput], bool]:
    """Concrete input shapes of `onnx_path` and whether its first axis is a batch axis.

    Rank-4 inputs are batched (their first dim becomes `batch`); lower-rank inputs (an
    R-CNN's 3 x H x W image) are not. Dynamic spatial dims take `image_size` (default 512).
    """
    path = Path(onnx_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and others
        raise ModelFileError(f"cannot read ONNX model ({type(err).__name__})", file=str(path)) from err
    initializers = {init.name for init in model.graph.initializer}
    height, width = ((image_size, image_size) if isinstance(image_size, int)
                     else tuple(image_size or (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)))
    specs, batched = [], True
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        rank_batched = len(dims) == 4
        batched = batched and rank_batched
        concrete = _concrete_dims(dims, rank_batched, batch, height, width)
        dtype = onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[tensor.elem_type].name
        specs.append(GraphInput(value.name, tuple(concrete), dtype, None in dims, tuple(dims)))
    if not specs:
        raise ModelFileError("the graph has no inputs", file=str(path))
    return specs, batched


def _concrete_dims(dims: list[int | None], batched: bool, batch: int, height: int,
                   width: int) -> list[int]:
    concrete = list(dims)
    if batched:
        concrete[0] = batch
    fill = {len(dims) - 2: height, len(dims) - 1: width}
    for axis, dim in enumerate(concrete):
        if dim is None:
            concrete[axis] = fill.get(axis, 3 if axis == len(dims) - 3 else 1)
    return [int(d) for d in concrete]


def latency_stats(latencies_ms: Sequence[float], items_per_call: int) -> dict[str, float]:
    """The shared protocol's p50 / p90 / p99 / mean / spread (ms per timed call), and items/s."""
    summary = stats(list(latencies_ms))
    mean = summary["mean_ms"]
    return {**summary, "items_per_s": items_per_call * 1000.0 / mean if mean > 0 else float("nan")}


def _time_ort(onnx_path: Path, specs: list[GraphInput], provider: str, calls: int,
              warmup: int, iterations: int, threads: int) -> list[float]:
    session = ort_session(onnx_path, provider=provider, threads=threads)
    rng = np.random.default_rng(0)
    feeds = {s.name: rng.random(s.shape, dtype=np.float32).astype(s.dtype) for s in specs}
    for _ in range(warmup):
        session.run(None, feeds)
    latencies_ms = []
    for _ in range(iterations):
        tick = time.perf_counter()
        for _ in range(calls):
            session.run(None, feeds)
        latencies_ms.append((time.perf_counter() - tick) * 1000.0)
    return latencies_ms


def _row(engine: str, batch: int, status: str, **fields: Any) -> dict[str, Any]:
    row = {key: None for key in ROW_KEYS}
    row.update(engine=engine, batch=batch, status=status, **fields)
    return row


def _bench_one(engine: str, path: Path, batch: int, image_size: Any, warmup: int,
               iterations: int, cores: int) -> dict[str, Any]:
    specs, batched = graph_inputs(path, batch, image_size)
    calls = 1 if batched else batch
    note = None if batched else f"graph takes one image: batch {batch} = {batch} sequential calls"
    base = {"cores": cores, "note": note, "model": path.name}
    spec = ENGINES[engine]
    return _BENCH_ON[spec.runtime](spec, path, specs, batch, batched, calls, warmup, iterations,
                                   base)


def _bench_deepsparse(spec: Engine, path: Path, specs: list[GraphInput], batch: int,
                      batched: bool, calls: int, warmup: int, iterations: int,
                      base: dict[str, Any]) -> dict[str, Any]:
    dynamic = any(s.dynamic for s in specs)
    result = deepsparse_bench(path, [s.shape for s in specs], [s.dtype for s in specs],
                              batch_size=batch if batched else None, sequential_calls=calls,
                              warmup=warmup, iterations=iterations, num_cores=base["cores"],
                              override_shapes=dynamic)
    if result["status"] != "ok":
        return _row(spec.name, batch, result["status"], reason=result["reason"], **base)
    stats = latency_stats(result["latencies_ms"], batch)
    base["cores"] = result["cores"]
    return _row(spec.name, batch, "ok", supported_op_fraction=result["supported_op_fraction"],
                **stats, **base)


def _bench_ort(spec: Engine, path: Path, specs: list[GraphInput], batch: int, batched: bool,
               calls: int, warmup: int, iterations: int, base: dict[str, Any]) -> dict[str, Any]:
    fixed = [s for s in specs if batched and s.graph_dims[0] not in (None, batch)]
    if fixed:
        return _row(spec.name, batch, "skipped", reason=(
            f"input '{fixed[0].name}' has a fixed batch of {fixed[0].graph_dims[0]}; export "
            f"with a dynamic batch axis to run batch {batch} on ONNX Runtime"), **base)
    try:
        latencies = _time_ort(path, specs, spec.provider, calls, warmup, iterations, base["cores"])
    except EngineUnavailable as err:
        return _row(spec.name, batch, "skipped", reason=str(err), **base)
    if spec.needs_gpu:
        base["cores"] = None
    return _row(spec.name, batch, "ok", **latency_stats(latencies, batch), **base)


_BENCH_ON = {DEEPSPARSE: _bench_deepsparse, ONNXRUNTIME: _bench_ort}  # by the engine's runtime


def bench_onnx(onnx_path: str | os.PathLike, engines: Sequence[str] = BENCH_ENGINES,
               batch_sizes: Sequence[int] = (1,), warmup: int = 5, iterations: int = 20,
               image_size: int | tuple[int, int] | None = None,
               cores: int | None = None) -> list[dict[str, Any]]:
    """Time `onnx_path` on each engine x batch size; one row per pair (see ROW_KEYS).

    Rows have status "ok", "skipped" (engine not available here, e.g. no CUDA) or "failed"
    (e.g. DeepSparse crashed compiling the graph); the last two carry a one-line reason.
    """
    path = Path(onnx_path)
    check_external_data(path)  # DeepSparse would follow a location outside the folder
    unknown = [e for e in engines if e not in BENCH_ENGINES]
    if unknown:
        raise ValueError(f"unknown engine {unknown[0]!r}; allowed: {', '.join(BENCH_ENGINES)}")
    if iterations < 1 or warmup < 0 or any(b < 1 for b in batch_sizes):
        raise ValueError("iterations must be >= 1, warmup >= 0 and batch sizes >= 1")
    cores = cores or physical_cores()
    rows = []
    for engine in engines:
        for batch in batch_sizes:
            row = _bench_one(engine, path, batch, image_size, warmup, iterations, cores)
            log.info("%s batch %d: %s %s", engine, batch, row["status"],
                         f"p50 {row['p50_ms']:.2f} ms" if row["p50_ms"] else row["reason"])
            rows.append(row)
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_bench_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of benchmark rows (one graph column: the ONNX file, or `pipeline` for
    the detector end to end), each distinct reason or note once under it."""
    header = ("graph", "engine", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "mean ms",
              "items/s", "cores", "ops supported")
    lines = [[str(r.get("graph") or r.get("model") or "-"), r["engine"], str(r["batch"]),
              r["status"], _fmt(r.get("p50_ms"), ".2f"), _fmt(r.get("p90_ms"), ".2f"),
              _fmt(r.get("p99_ms"), ".2f"), _fmt(r.get("mean_ms"), ".2f"),
              _fmt(r.get("items_per_s"), ".2f"), _fmt(r.get("cores"), "d"),
              _fmt(r.get("supported_op_fraction"), ".1%")] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    seen: set[str] = set()
    for r, line in zip(rows, lines):
        for key in ("reason", "note"):
            text = r.get(key)
            if text and text not in seen:
                seen.add(text)
                out.append(f"{line[0]} {r['engine']} batch {r['batch']}: {text}")
    return "\n".join(out)
