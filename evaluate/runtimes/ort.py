"""ONNX Runtime sessions for evaluation and benchmarks (CPU, or CUDA with onnxruntime-gpu)."""
from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from compress.core.errors import ModelFileError

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
MAX_INPUT_BYTES = 4 * 2**30  # one input tensor; an R-CNN image at 1333 px, batch 8, is 170 MB
_ITEM_BYTES = {"tensor(double)": 8, "tensor(int64)": 8, "tensor(uint64)": 8, "tensor(float16)": 2,
               "tensor(bfloat16)": 2, "tensor(int16)": 2, "tensor(uint16)": 2, "tensor(int8)": 1,
               "tensor(uint8)": 1, "tensor(bool)": 1}
_LOAD_ERRORS = tuple(getattr(ort.capi.onnxruntime_pybind11_state, name) for name in
                     ("InvalidGraph", "InvalidProtobuf", "Fail", "NotImplemented",
                      "InvalidArgument", "NoSuchFile", "NoModel")
                     if hasattr(ort.capi.onnxruntime_pybind11_state, name))


class EngineUnavailable(RuntimeError):
    """The requested runtime cannot run here (package or device missing); the reason says why."""


def physical_cores() -> int:
    """Physical CPU cores usable by this process (hyper-threads not counted)."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or logical or 1, logical or 1))


def check_input_size(name: str, shape: Any, item_bytes: int, path: str | os.PathLike) -> None:
    """ModelFileError when a (static) input of `shape` would take more than MAX_INPUT_BYTES, so
    nothing tries to allocate it (a declared 112 GiB input)."""
    dims = list(shape)
    if not all(isinstance(d, int) and d >= 0 for d in dims):
        return  # dynamic: the caller picks the size
    size = math.prod(dims) * item_bytes
    if size > MAX_INPUT_BYTES:
        raise ModelFileError(f"input {name!r} of shape {dims} needs {size / 2**30:.1f} GiB; allowed: "
                             f"at most {MAX_INPUT_BYTES / 2**30:.0f} GiB per input", file=str(path))


def cuda_unavailable_reason() -> str | None:
    """None when ORT's CUDA provider can be used, else one line saying why not."""
    available = ort.get_available_providers()
    if PROVIDERS["cuda"] not in available:
        return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                f"{', '.join(available)}); install onnxruntime-gpu and run on a CUDA GPU")
    return None


def ort_session(onnx_path: str | os.PathLike, provider: str = "cpu",
                threads: int | None = None, spinning: bool = True, *,
                user_file: bool = True) -> ort.InferenceSession:
    """An InferenceSession on `provider` ("cpu" or "cuda").

    `threads` sets ORT's intra-op threads (default: the physical cores); `spinning=False` stops
    idle threads from busy-waiting (needed when several sessions or processes share the cores). Raises
    `EngineUnavailable` when CUDA is asked for but onnxruntime-gpu or a GPU is missing, and
    `ModelFileError` when the file is missing or not a valid ONNX model. `user_file=False` is for
    the files the toolkit writes itself (deployment parts): ONNX Runtime refusing one is a toolkit
    bug (a partitioning error, an op it lacks), a plain RuntimeError with the reason, not a bad
    file of the user's.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {sorted(PROVIDERS)}, got {provider!r}")
    path = Path(onnx_path)
    if not path.is_file():
        raise ModelFileError("ONNX file not found", file=str(path))
    if provider == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            raise EngineUnavailable(reason)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider == "cuda" else [])
    if path.stat().st_size == 0:
        raise ModelFileError("empty file (0 bytes); expected an ONNX model", file=str(path))
    session = _load(path, options, providers, user_file)
    for value in session.get_inputs():
        check_input_size(value.name, value.shape, _ITEM_BYTES.get(value.type, 4), path)
    if provider == "cuda" and PROVIDERS["cuda"] not in session.get_providers():
        raise EngineUnavailable("CUDAExecutionProvider is installed but could not start "
                                "(no CUDA device or CUDA/cuDNN libraries missing)")
    log.debug("ORT session on %s with %d threads", session.get_providers(),
                  options.intra_op_num_threads)
    return session


def _load(path: Path, options: ort.SessionOptions, providers: list[str],
          user_file: bool) -> ort.InferenceSession:
    """The session; ORT's refusal as ModelFileError for a user's file (exit 2), as RuntimeError
    naming the reason for one the toolkit wrote (exit 1: the toolkit's fault)."""
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except _LOAD_ERRORS as err:
        text = " ".join(str(err).split())[:300]
        if not user_file:
            raise RuntimeError(f"ONNX Runtime cannot load the toolkit's own graph {path} "
                               f"({type(err).__name__}: {text})") from err
        raise ModelFileError(f"not a loadable ONNX model ({text})", file=str(path)) from err


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_external_data(onnx_path: str | os.PathLike) -> None:
    """ModelFileError when the ONNX file keeps tensor data outside its own folder (an absolute
    or `..` location): ONNX Runtime refuses those, DeepSparse's compile would follow them."""
    path = Path(onnx_path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 (a file onnx cannot parse: ORT's own load says why)
        del err
        return
    folder = path.resolve().parent
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(folder):
            raise ModelFileError(f"tensor {tensor.name!r} keeps its data at {location!r}, outside "
                                 "the model's folder; refused", file=str(path))


def _all_tensors(graph: "onnx.GraphProto") -> list["onnx.TensorProto"]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
                tensors.extend(_all_tensors(sub))
    return tensors
