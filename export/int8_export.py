"""Export the INT8 ticket: the QDQ full graph (ONNX Runtime), its DeepSparse deployment with the
heavy parts in SparseML's integer form, the zeros verified in both, parity with torch.

Parity (stated): fake-quantized torch and integer kernels compute the same numbers up to
summation order, but an activation on a rounding boundary can land one quantization step apart,
and that step moves what follows; low-scoring detections then cross the score threshold. So
parity is judged on the detections a user sees (`compress.evaluate.runtimes.parity.summarize_int8`: of
the detections scoring >= 0.5 on either side, at least 75% have a same-label partner at IoU >=
0.85). The accuracy gates are the mAP checks of the quantize stage (the INT8 ticket loses at most
0.02 against the fp32 ticket, DeepSparse within 0.005 of ONNX Runtime).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch

from compress.core.atomic import write_json
from compress.export.compact import pack
from compress.export.deploy.build import deploy_exported
from compress.export.deploy.int8 import convert_deployment, verify_int8_zeros
from compress.export.onnx_export import export_full
from compress.export.verify import verify_zeros
from compress.evaluate.runtimes.parity import summarize_int8
from compress.evaluate.runtimes.manifest import read_manifest
from compress.evaluate.runtimes.pipeline import OnnxDetector, to_canvas

log = logging.getLogger(__name__)

def torch_vs_onnx(model: torch.nn.Module, onnx_path: Path,
                  images: Sequence[torch.Tensor]) -> dict[str, Any]:
    """The fake-quantized torch model against its QDQ graph on ONNX Runtime (`summarize_int8`)."""
    detector = OnnxDetector(onnx_path, spinning=False)
    pairs = []
    with torch.no_grad():
        for image in images:
            pairs.append(({k: v.numpy() for k, v in model([image])[0].items()},
                          {k: v.numpy() for k, v in detector(image).items()}))
    return summarize_int8(pairs)


def export_int8(model: torch.nn.Module, mask: dict[str, torch.Tensor], quantized: set[str],
                out_dir: Path, *, image_size: int, opset: int,
                images: Sequence[torch.Tensor], deploy_images: Sequence[torch.Tensor] = ()
                ) -> dict[str, Any]:
    """Write model.onnx (QDQ) and deploy/ (INT8 parts) into `out_dir`, verify, return the record.

    `model`: the fake-quantized ticket, observers off; `mask`: its keep masks by (quantized
    model) parameter name; `quantized`: the parameter names of the fake-quantized layers."""
    model = model.eval()
    opset = max(opset, 13)  # per-channel Q/DQ and QAT export need opset >= 13
    full = out_dir / "model.onnx"
    export_full(model, full, image_size=image_size, opset=opset)
    zeros_full = verify_zeros(full, model, mask)
    parity = torch_vs_onnx(model, full, images)
    deploy = out_dir / "deploy"
    images = [*deploy_images, *images]
    manifest = deploy_exported(model, full, deploy, canvas_size=image_size, images=images,
                               judge=summarize_int8)
    conversion = None
    if manifest.status in ("ok", "unchecked"):  # the partition holds: heavy parts to integers
        canvases = [to_canvas(image, image_size, image_size)[0] for image in images]
        conversion = convert_deployment(deploy, full, canvases)
        manifest = read_manifest(deploy, verify=False)
    parts = [onnx.load(str(deploy / p.file)) for p in manifest.parts if p.runtime == "deepsparse"]
    keep = {n: m.cpu().numpy().astype(bool) for n, m in mask.items()}
    zeros_deploy = verify_int8_zeros(parts, keep, quantized)
    archives = out_dir / "archives"  # each INT8 heavy part as a compact archive (compress.export.compact)
    for entry in manifest.parts:
        if entry.runtime == "deepsparse":
            pack(deploy / entry.file, archives / (Path(entry.file).stem + ".lthz"))
    sizes = {"onnx_bytes": full.stat().st_size,
             "compact_int8_bytes": sum(p.stat().st_size for p in archives.glob("*.lthz")),
             "deploy_bytes": sum(int(p.bytes) for p in manifest.parts),
             "deploy_heavy_bytes": sum(int(p.bytes) for p in manifest.parts
                                       if p.runtime == "deepsparse")}
    checks = {"zeros_full": zeros_full, "zeros_deploy": zeros_deploy, "parity_full": parity}
    write_json(out_dir / "verify.json", checks)
    record = {"onnx": str(full), "opset": opset, **sizes,
              "zeros_preserved": bool(zeros_full["passed"] and zeros_deploy["passed"]),
              "integer_op_fraction": integer_fraction(parts),
              "parity_ok": parity["status"] == "ok", "parity_status": parity["status"],
              "parity_reason": parity.get("reason"),
              "deploy": {"status": manifest.status,
                         "parts": [p.name for p in manifest.parts],
                         "parity": manifest.parity, "reason": manifest.reason,
                         "int8_conversion": conversion}}
    log.info("int8 export %s: zeros preserved %s, torch parity %s, deployment %s, integer parts "
             "vs QDQ graph %s", out_dir, record["zeros_preserved"], parity["status"],
             manifest.status, (conversion or {}).get("status"))
    return record


def integer_fraction(parts: Sequence[onnx.ModelProto]) -> float:
    """Share of the parts' conv / matmul nodes that run as integer kernels."""
    ops = [n.op_type for p in parts for n in p.graph.node
           if n.op_type in ("Conv", "Gemm", "MatMul", "ConvInteger", "MatMulInteger")]
    return float(np.mean([op.endswith("Integer") for op in ops])) if ops else 0.0
