"""The deployment's heavy parts in the INT8 form DeepSparse runs: SparseML's `ONNXToDeepsparse`.

A QAT export is QDQ: each quantized conv / linear reads `DequantizeLinear(QuantizeLinear(x))`
of its input and of its fp32 weight. SparseML's exporter turns that into ConvInteger /
MatMulInteger with uint8 weights (zero point 128: a pruned weight is stored as exactly 128, i.e.
0 after dequantization) followed by Add (bias), Cast and Mul (rescale); DeepSparse fuses these
into its sparse INT8 kernels, ONNX Runtime runs them as they are. The full graph is not converted
(SparseML's topological sort ignores `If` subgraph reads and breaks it); ONNX Runtime runs the
QDQ full graph directly.

The R-CNN calls the RPN head once per FPN level: the export then shares one weight Q/DQ chain
between several convs, which SparseML's conv transform deletes once per conv (ValueError);
`unshare_weight_qdq` gives each conv its own copy first.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compress.core.atomic import write_bytes, write_json
from compress.core.deploy_manifest import MANIFEST, Manifest, Part
from compress.evaluate.runtimes.parity import summarize_int8
from compress.export.deploy.build import verify_deployment

log = logging.getLogger(__name__)

_QUANTIZED = ("Conv", "Gemm", "MatMul")


def unshare_weight_qdq(model: onnx.ModelProto) -> int:
    """Give every quantized conv / linear its own weight QuantizeLinear -> DequantizeLinear chain
    (in place); returns how many copies were made."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name for init in graph.initializer}
    copies, added = 0, []
    for node in list(graph.node):
        if node.op_type not in _QUANTIZED or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers[dq.output[0]]) < 2:
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in initializers:
            continue
        if consumers[dq.output[0]][0] is node:
            continue  # the first reader keeps the original chain
        suffix = f"_lth_{copies}"
        new_q, new_dq = copy.deepcopy(q), copy.deepcopy(dq)
        new_q.name, new_dq.name = q.name + suffix, dq.name + suffix
        new_q.output[0] = q.output[0] + suffix
        new_dq.input[0], new_dq.output[0] = new_q.output[0], dq.output[0] + suffix
        node.input[1] = new_dq.output[0]
        added.append((node, [new_q, new_dq]))
        copies += 1
    for reader, chain in added:  # each copy just before its reader keeps the graph sorted
        index = list(graph.node).index(reader)
        for offset, new in enumerate(chain):
            graph.node.insert(index + offset, new)
    return copies


def to_deepsparse_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A QDQ part converted by SparseML's ONNX -> DeepSparse exporter (a new model)."""
    from sparseml.exporters.onnx_to_deepsparse import ONNXToDeepsparse

    part = copy.deepcopy(model)
    unshare_weight_qdq(part)
    logging.getLogger("sparseml").setLevel(logging.WARNING)
    return ONNXToDeepsparse(inplace=True).apply(part)


def int8_weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, int]]:
    """{initializer name: (stored integer weight, zero point)} of the integer convs / matmuls."""
    inits = {init.name: init for init in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("ConvInteger", "MatMulInteger") or len(node.input) < 2:
            continue
        weight = inits.get(node.input[1])
        if weight is None:
            continue
        zero_name = node.input[3] if len(node.input) > 3 else ""
        zero = int(numpy_helper.to_array(inits[zero_name]).reshape(-1)[0]) if zero_name in inits else 0
        out[weight.name] = (numpy_helper.to_array(weight), zero)
    return out


def verify_int8_zeros(parts: list[onnx.ModelProto], mask: dict[str, np.ndarray],
                      quantized: set[str]) -> dict:
    """Every pruned weight of a quantized layer is stored as exactly its zero point in an integer
    weight of the deployed parts (exact integer comparison). `mask`: {parameter name: keep
    (bool array)}; `quantized`: the parameter names whose layers were quantized. A layer's
    integer weight is found by shape (transposed for MatMulInteger) and by holding the layer's
    zeros; a layer none holds fails."""
    weights = [w for part in parts for w in int8_weights(part).values()]
    tensors, failed = {}, []
    for name, keep in mask.items():
        if name not in quantized:
            continue
        pruned = ~keep.astype(bool)
        holders = []
        for stored, zero in weights:
            views = [stored] + ([stored.T] if stored.ndim == 2 else [])  # MatMulInteger: [in, out]
            for aligned in views:
                if aligned.shape == keep.shape and bool(np.all(aligned[pruned] == zero)):
                    holders.append(int((aligned == zero).sum()))
                    break
        tensors[name] = {"pruned": int(pruned.sum()), "numel": int(keep.size),
                         "passed": bool(holders), "stored_zeros": holders[0] if holders else None}
        if not holders:
            failed.append(name)
    return {"checked": len(tensors), "failed": failed, "tensors": tensors,
            "passed": not failed and bool(tensors)}


def convert_deployment(folder: Path, full_onnx: Path, canvases: list[np.ndarray]) -> dict:
    """Turn a QDQ deployment (partitioned and checked against its QDQ full graph by
    `build_deployment`) into the INT8 deployment, in place: each DeepSparse part converted by
    `to_deepsparse_int8`, rewritten atomically with its new sha256, the manifest rewritten last
    (removed first: a kill in between leaves nothing for a resume to trust). The converted
    partition is then checked on ONNX Runtime against the QDQ full graph (`summarize_int8`: the
    integer kernels round in another order than ONNX Runtime's fused QDQ path); returns that
    check, also stored as the manifest's `int8_conversion`."""
    path = folder / MANIFEST
    manifest = Manifest.from_json(json.loads(path.read_text()))
    path.unlink()
    manifest = manifest.replace(parts=[_to_int8(folder, p) if p.runtime == "deepsparse" else p
                                       for p in manifest.parts])
    # the check below runs the new parts
    write_json(path, manifest.replace(status="draft").to_json())
    check = verify_deployment(full_onnx, folder, canvases, judge=summarize_int8)
    write_json(path, manifest.replace(int8_conversion=check).to_json())
    return check


def _to_int8(folder: Path, entry: Part) -> Part:
    """One DeepSparse part converted (`to_deepsparse_int8`), rewritten atomically; its entry
    with the new checksum and size."""
    data = to_deepsparse_int8(onnx.load(str(folder / entry.file))).SerializeToString()
    write_bytes(folder / entry.file, data)
    return dataclasses.replace(entry, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                               precision="int8")
