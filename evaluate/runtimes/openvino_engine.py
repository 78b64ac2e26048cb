"""OpenVINO, the CPU runtime a user would pick instead: an optional extra (`pip install
lth-compress[openvino]`), never a core dependency, used by the benchmarks only.

Two precisions: `openvino` is OpenVINO's default on this CPU (bf16 where the CPU has AVX-512
BF16 or AMX, else f32), `openvino-fp32` pins `INFERENCE_PRECISION_HINT` to f32. Models are
compiled at fixed shapes (the deployment's canvas and buckets), as DeepSparse's are. OpenVINO
keeps dense kernels for pruned weights (its sparse-weight decompression is INT8 MatMul on AMX CPUs
only), so a ticket's zeros buy it nothing: the comparison is the dense model.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Sequence

import numpy as np
import torch

from compress.evaluate.engines import ENGINES, OPENVINO_ENGINES
from compress.evaluate.runtimes.ort import EngineUnavailable


def openvino_missing_reason() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'lth-compress[openvino]')"
    return None


def _config(engine: str, threads: int) -> dict[str, Any]:
    if engine not in OPENVINO_ENGINES:
        raise ValueError(f"engine must be one of {OPENVINO_ENGINES}, got {engine!r}")
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if ENGINES[engine].precision:
        config["INFERENCE_PRECISION_HINT"] = ENGINES[engine].precision
    return config


class OpenVinoModel:
    """One ONNX file compiled by OpenVINO at fixed input shapes; `run(inputs)` -> outputs."""

    def __init__(self, onnx_path: str | os.PathLike, input_shapes: Sequence[Sequence[int]], *,
                 engine: str = "openvino", threads: int = 1) -> None:
        import openvino as ov  # the optional extra: imported only when asked for, like deepsparse

        core = ov.Core()
        try:
            model = core.read_model(str(onnx_path))
            model.reshape({port.any_name: ov.PartialShape(list(shape))
                           for port, shape in zip(model.inputs, input_shapes)})
            self.compiled = core.compile_model(model, "CPU", _config(engine, threads))
        except RuntimeError as err:  # OpenVINO cannot read or compile it: this runtime cannot run it
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise EngineUnavailable(f"OpenVINO: {first}") from err
        self.request = self.compiled.create_infer_request()
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.request.infer([np.ascontiguousarray(a) for a in inputs])
        return [self.request.get_output_tensor(i).data.copy()
                for i in range(len(self.compiled.outputs))]


class OpenVinoDetector:
    """The exported full graph on OpenVINO at one canvas size: `detector(image)` ->
    torchvision-style outputs, like `OnnxDetector`."""

    def __init__(self, onnx_path: str | os.PathLike, height: int, width: int, *,
                 engine: str = "openvino", threads: int = 1) -> None:
        self.model = OpenVinoModel(onnx_path, [(3, height, width)], engine=engine, threads=threads)
        self.output_names = [port.any_name for port in self.model.compiled.outputs]

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.model.run([image.detach().cpu().float().numpy()])
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, values)}
