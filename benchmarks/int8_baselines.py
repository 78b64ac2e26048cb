"""The dense INT8 models a user would build instead of a sparse INT8 ticket, written for
`bench_deploy.py --int8 --baselines-python PY` to time (it times them itself, interleaved with
its own rows). Runs in a side environment: NNCF and ONNX Runtime's quantizer need onnx >= 1.16,
which SparseML's pins forbid (see README "Side environment for the INT8 baselines"):

    python3.11 -m venv .venv-int8 && .venv-int8/bin/pip install "numpy<2" openvino==2026.4.1 \\
        nncf onnx onnxruntime==1.26.0 sympy

    .venv-int8/bin/python benchmarks/int8_baselines.py --onnx DENSE.onnx --images CANVAS.npy --out DIR

Writes DIR/nncf_int8.xml (OpenVINO + NNCF post-training quantization: the ONNX graph read by
OpenVINO, saved as fp32 IR first, since NNCF fails on the graph read straight from ONNX with
"Could not find a node Gather_... in NNCFGraph") and DIR/ort_static_int8.onnx (ONNX Runtime
static QDQ quantization of Conv / MatMul / Gemm, uint8 activations: with int8 activations it
quantizes only 36 of 81 convs), both calibrated on the given canvas images; prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def nncf_int8(onnx_path: Path, images: np.ndarray, out: Path) -> Path:
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx_path))
    model.reshape({model.inputs[0].any_name: ov.PartialShape(list(images.shape[1:]))})
    fp32 = out / "dense_fp32.xml"
    ov.save_model(model, str(fp32), compress_to_fp16=False)
    quantized = nncf.quantize(core.read_model(str(fp32)), nncf.Dataset(list(images)),
                              subset_size=len(images))
    target = out / "nncf_int8.xml"
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return target


def ort_static_int8(onnx_path: Path, images: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": image} for image in images])

        def get_next(self):
            return next(self.items, None)

    target = out / "ort_static_int8.onnx"
    quantize_static(str(onnx_path), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="N x 3 x H x W float32 .npy")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images = np.load(args.images).astype(np.float32)
    found = {}
    for name, build in (("nncf_int8", nncf_int8), ("ort_static_int8", ort_static_int8)):
        try:
            found[name] = str(build(args.onnx, images, args.out))
        except Exception as err:  # a failed baseline is a row with its reason, not a crash
            found[name] = {"failed": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    print(json.dumps(found))


if __name__ == "__main__":
    main()
