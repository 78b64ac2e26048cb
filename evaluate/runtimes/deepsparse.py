"""DeepSparse behind a process boundary: compile and time ONNX files in a child process.

DeepSparse 1.8 segfaults while compiling some graphs (the full R-CNN graph among them) and takes
the whole process down, so every compile happens in `python -m compress.evaluate.runtimes.deepsparse` and
a crash, a timeout or an error comes back as data: {"engine": "deepsparse", "status": "failed",
"reason": ...}. This is the only module that imports deepsparse, and only inside the child.

The supported-op fraction is DeepSparse's own figure, `Engine.fraction_of_supported_ops` (the
portion of the network that runs in its optimized runtime rather than its fallback).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from compress.evaluate.runtimes.child_watch import watch_parent
from compress.evaluate.runtimes.ort import check_input_size

log = logging.getLogger(__name__)
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # evaluate/runtimes/ -> the checkout
DEFAULT_TIMEOUT_S = 900.0


def deepsparse_missing_reason() -> str | None:
    """None when the deepsparse package is installed, else why it cannot be used."""
    if importlib.util.find_spec("deepsparse") is None:
        return "deepsparse is not installed (pip install deepsparse==1.8.0)"
    return None


def _failed(reason: str) -> dict[str, Any]:
    return {"engine": "deepsparse", "status": "failed", "reason": reason}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def child_env() -> dict[str, str]:
    """Environment of a DeepSparse child: no analytics look-up, this checkout importable."""
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_child(argv: Sequence[str], timeout_s: float, result_path: Path) -> dict[str, Any]:
    """Run `argv` as a child process that writes a JSON result to `result_path`.

    Returns that result, or a "failed" row when the child dies from a signal, exits non-zero,
    times out or writes nothing. The child may name what it is doing ("compile", "run") in
    `<result_path>.stage`; the reason says in which stage it failed.
    """
    try:
        proc = subprocess.run(list(argv), env=child_env(), capture_output=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        stage = _stage(result_path)
        return _failed(f"{stage} timed out after {timeout_s:.0f} s (child killed)")
    stage = _stage(result_path)
    if proc.returncode < 0:
        sig = -proc.returncode
        return _failed(f"{stage} crashed ({_signal_name(sig)}, signal {sig})")
    if proc.returncode != 0 or not result_path.is_file():
        output = (proc.stdout + b"\n" + proc.stderr).decode("utf-8", errors="replace")
        return _failed(_failure_reason(stage, proc.returncode, output))
    return json.loads(result_path.read_text())


def _stage_path(result_path: str | Path) -> Path:
    return Path(f"{result_path}.stage")


def _stage(result_path: Path) -> str:
    path = _stage_path(result_path)
    return path.read_text().strip() if path.is_file() else "compile"


def _failure_reason(stage: str, returncode: int, output: str) -> str:
    """One line from a failed child: DeepSparse's caught signal, else the Python exception."""
    crash = re.search(r"Received signal: ([^(\n]+?)\s*(\(|$)", output, re.MULTILINE)
    if crash:
        name = crash.group(1).strip()
        number = {"Segmentation fault": 11, "Aborted": 6, "Bus error": 7,
                  "Floating point exception": 8, "Illegal instruction": 4}.get(name)
        tag = f"signal {number}" if number else "signal"
        return f"{stage} crashed ({name}, {tag}; DeepSparse exited with code {returncode})"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"{stage} failed (exit code {returncode}): {last[:300]}"


def _child_argv(request_path: Path) -> list[str]:
    return [sys.executable, "-m", "compress.evaluate.runtimes.deepsparse", str(request_path)]


def _call(request: dict[str, Any], timeout_s: float, workdir: Path) -> dict[str, Any]:
    missing = deepsparse_missing_reason()
    if missing:
        return {"engine": "deepsparse", "status": "skipped", "reason": missing}
    request_path = workdir / "request.json"
    result_path = workdir / "result.json"
    request["result_path"] = str(result_path)
    request["parent_pid"] = os.getpid()
    request_path.write_text(json.dumps(request))
    return run_child(_child_argv(request_path), timeout_s, result_path)


def deepsparse_bench(onnx_path: str | os.PathLike, input_shapes: Sequence[Sequence[int]],
                     input_dtypes: Sequence[str], *, batch_size: int | None = 1,
                     sequential_calls: int = 1, warmup: int = 5, iterations: int = 20,
                     num_cores: int | None = None, override_shapes: bool = False,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Compile `onnx_path` with DeepSparse in a child and time it on random inputs.

    `batch_size` None keeps the graph's own first dimension (graphs without a batch axis);
    `sequential_calls` runs the engine that many times per timed item (one image per call).
    Returns {"engine", "status": "ok", "latencies_ms", "supported_op_fraction", "cores",
    "compile_s"} or a failed / skipped row with a reason.
    """
    for index, (shape, dtype) in enumerate(zip(input_shapes, input_dtypes)):
        check_input_size(f"#{index}", [int(d) for d in shape], np.dtype(dtype).itemsize, onnx_path)
    request = {"mode": "bench", "onnx_path": str(onnx_path), "batch_size": batch_size,
               "input_shapes": [list(map(int, s)) for s in input_shapes],
               "input_dtypes": list(input_dtypes), "override_shapes": override_shapes,
               "sequential_calls": sequential_calls, "warmup": warmup,
               "iterations": iterations, "num_cores": num_cores}
    with tempfile.TemporaryDirectory(prefix="deepsparse_") as tmp:
        return _call(request, timeout_s, Path(tmp))


def deepsparse_bench_files(files: Sequence[tuple[str | os.PathLike, Sequence[int]]], *,
                           warmup: int = 3, iterations: int = 10, num_cores: int | None = None,
                           interleave: bool = False,
                           timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Compile and time several small single-input ONNX files in ONE child process.

    `files` holds (path, input shape with its batch axis); the graphs are compiled at the batch
    of that shape. One child for a whole group amortises DeepSparse's import (seconds) over the
    group, as a per-layer latency profile needs. `interleave` compiles every file first and
    then runs them in turn each iteration (A B A B; whole-model comparisons). Returns {"engine",
    "status": "ok", "files": [{"path", "latencies_ms", "p50_ms", "p90_ms", "min_ms",
    "compile_s"}, ...]} or a failed / skipped row (a crash in any file fails the group; the
    caller records it as data).
    """
    request = {"mode": "bench_files", "warmup": warmup, "iterations": iterations,
               "num_cores": num_cores, "interleave": interleave,
               "files": [{"path": str(p), "shape": [int(d) for d in shape]} for p, shape in files]}
    with tempfile.TemporaryDirectory(prefix="deepsparse_") as tmp:
        return _call(request, timeout_s, Path(tmp))


# ----------------------------------------------------------------------------- child side
def _compile(request: dict[str, Any]) -> Any:
    from deepsparse import compile_model  # the one place deepsparse is imported

    shapes = request["input_shapes"] if request.get("override_shapes") else None
    path = request["onnx_path"]
    if shapes is not None:
        # DeepSparse overrides input shapes by rewriting the ONNX file in place: compile a copy,
        # so the user's (and the run's) ONNX keeps its dynamic image size. The copy goes into the
        # parent's work folder, which the parent removes even when this child crashes.
        path = str(Path(request["result_path"]).parent / f"shapes_{Path(path).name}")
        shutil.copyfile(request["onnx_path"], path)
    return compile_model(path, batch_size=request["batch_size"],
                         num_cores=request.get("num_cores"), input_shapes=shapes)


def _child_bench(request: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    engine = _compile(request)
    compile_s = time.perf_counter() - start
    _stage_path(request["result_path"]).write_text("run")
    rng = np.random.default_rng(0)
    inputs = [np.ascontiguousarray(rng.random(shape, dtype=np.float32).astype(dtype))
              for shape, dtype in zip(request["input_shapes"], request["input_dtypes"])]
    calls = int(request.get("sequential_calls") or 1)
    for _ in range(int(request["warmup"])):
        engine.run(inputs, val_inp=False)
    latencies_ms = []
    for _ in range(int(request["iterations"])):
        tick = time.perf_counter()
        for _ in range(calls):
            engine.run(inputs, val_inp=False)
        latencies_ms.append((time.perf_counter() - tick) * 1000.0)
    return {"engine": "deepsparse", "status": "ok", "latencies_ms": latencies_ms,
            "supported_op_fraction": float(engine.fraction_of_supported_ops),
            "cores": int(engine.num_cores), "compile_s": compile_s}


def _time_once(engine: Any, inputs: list[np.ndarray]) -> float:
    tick = time.perf_counter()
    engine.run(inputs, val_inp=False)
    return (time.perf_counter() - tick) * 1000.0


def _file_row(path: str, latencies_ms: list[float], compile_s: float) -> dict[str, Any]:
    return {"path": path, "latencies_ms": latencies_ms, "p50_ms": float(np.median(latencies_ms)),
            "p90_ms": float(np.percentile(latencies_ms, 90)), "min_ms": float(min(latencies_ms)),
            "compile_s": compile_s}


def _child_bench_files(request: dict[str, Any]) -> dict[str, Any]:
    """Sequential: compile, warm up and time one file after the other (engines freed as they
    go). Interleaved: compile all, then every iteration runs each file once (A B A B)."""
    from deepsparse import compile_model  # the one place deepsparse is imported

    rng = np.random.default_rng(0)
    interleave = bool(request.get("interleave"))
    compiled, rows = [], []
    for item in request["files"]:
        _stage_path(request["result_path"]).write_text(f"compile {Path(item['path']).name}")
        start = time.perf_counter()
        engine = compile_model(item["path"], batch_size=int(item["shape"][0]),
                               num_cores=request.get("num_cores"))
        entry = (item["path"], engine, [np.ascontiguousarray(rng.random(item["shape"], dtype=np.float32))],
                 time.perf_counter() - start)
        _stage_path(request["result_path"]).write_text(f"run {Path(item['path']).name}")
        for _ in range(int(request["warmup"])):
            engine.run(entry[2], val_inp=False)
        if interleave:
            compiled.append(entry)
            continue
        rows.append(_file_row(item["path"], [_time_once(engine, entry[2])
                                             for _ in range(int(request["iterations"]))], entry[3]))
        del engine, entry
    if interleave:
        times: list[list[float]] = [[] for _ in compiled]
        for _ in range(int(request["iterations"])):
            for index, (_, engine, inputs, _) in enumerate(compiled):
                times[index].append(_time_once(engine, inputs))
        rows = [_file_row(path, t, c) for (path, _, _, c), t in zip(compiled, times)]
    return {"engine": "deepsparse", "status": "ok", "files": rows}


def _child_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DeepSparse child process (internal).")
    parser.add_argument("request", help="request JSON written by the parent")
    request = json.loads(Path(parser.parse_args(argv).request).read_text())
    if "parent_pid" in request:  # killed with the parent, work folder removed (child_watch)
        watch_parent(int(request["parent_pid"]), Path(request["result_path"]).parent)
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    handler = {"bench": _child_bench, "bench_files": _child_bench_files}[request["mode"]]
    result = handler(request)
    tmp = Path(request["result_path"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, request["result_path"])
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
