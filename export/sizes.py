"""Size table: dense ONNX, gzip of it, sparse-initializer ONNX, compact archive, information bound.

Per fp32 initializer and overall. The bound for a tensor of n weights with s = zeros / n is
n * (H(s)/8 + 4(1-s)) bytes (H the binary entropy in bits, fp32 values): the bytes needed to say
which weights are zero plus the nonzero values stored verbatim. Overall figures are file sizes
(graph included) except `bound_bytes`, which covers the fp32 initializers only.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import onnx
import torch

from compress.export.compact import bound_bytes, read_header
from compress.export.onnx_export import load_onnx
from compress.export.verify import map_initializers


def _sparse_sizes(sparse_onnx_path: str | os.PathLike) -> dict[str, int]:
    model = load_onnx(sparse_onnx_path)
    sizes = {t.name: t.ByteSize() for t in model.graph.initializer}
    sizes.update({s.values.name: s.ByteSize() for s in model.graph.sparse_initializer})
    return sizes


def _compact_sizes(compact_path: str | os.PathLike) -> dict[str, int]:
    header = read_header(compact_path)
    return {t["name"]: sum(t["blobs"]) for t in header["tensors"]}


def size_table(onnx_path: str | os.PathLike, sparse_onnx_path: str | os.PathLike,
               compact_path: str | os.PathLike, mask: dict[str, torch.Tensor] | None) -> dict:
    """Sizes per fp32 initializer (`tensors`) and for the whole files (`overall`), in bytes."""
    model = load_onnx(onnx_path)
    torch_names = {v: k for k, v in map_initializers(model, list(mask or {})).items()}
    sparse_sizes, compact_sizes = _sparse_sizes(sparse_onnx_path), _compact_sizes(compact_path)
    rows = []
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        array = onnx.numpy_helper.to_array(tensor)
        payload = array.astype("<f4").tobytes()
        zeros = int((array == 0).sum())
        rows.append({
            "name": tensor.name, "torch_name": torch_names.get(tensor.name),
            "pruned": tensor.name in torch_names, "numel": int(array.size),
            "sparsity": zeros / max(array.size, 1), "dense_bytes": len(payload),
            "gzip_bytes": len(gzip.compress(payload, 6)),
            "sparse_onnx_bytes": sparse_sizes.get(tensor.name, len(payload)),
            "compact_bytes": compact_sizes.get(tensor.name, len(payload)),
            "bound_bytes": bound_bytes(array.size, zeros)})
    data = Path(onnx_path).read_bytes()
    overall = {
        "weights": sum(r["numel"] for r in rows),
        "onnx_bytes": len(data), "gzip_bytes": len(gzip.compress(data, 6)),
        "sparse_onnx_bytes": Path(sparse_onnx_path).stat().st_size,
        "compact_bytes": Path(compact_path).stat().st_size,
        "bound_bytes": sum(r["bound_bytes"] for r in rows)}
    overall["compact_over_bound"] = overall["compact_bytes"] / max(overall["bound_bytes"], 1e-9)
    zeros_total = sum(r["sparsity"] * r["numel"] for r in rows)
    overall["sparsity"] = zeros_total / max(overall["weights"], 1)
    return {"tensors": rows, "overall": overall}


def format_size_table(table: dict, pruned_only: bool = True) -> str:
    """A fixed-width text table (KiB) of `size_table`'s result, one row per tensor plus a total."""
    cols = ("dense_bytes", "gzip_bytes", "sparse_onnx_bytes", "compact_bytes", "bound_bytes")
    head = f"{'tensor':<44} {'numel':>10} {'sparsity':>8} " + " ".join(
        f"{c.removesuffix('_bytes'):>11}" for c in cols) + f" {'cmp/bnd':>7}"
    lines = [head, "-" * len(head)]
    for row in table["tensors"]:
        if pruned_only and not row["pruned"]:
            continue
        name = (row["torch_name"] or row["name"])[-44:]
        sizes = " ".join(f"{row[c] / 1024:>11.1f}" for c in cols)
        ratio = row["compact_bytes"] / max(row["bound_bytes"], 1e-9)
        lines.append(f"{name:<44} {row['numel']:>10} {row['sparsity']:>8.3f} {sizes} {ratio:>7.3f}")
    o = table["overall"]
    sizes = " ".join(f"{o[c] / 1024:>11.1f}" for c in
                     ("onnx_bytes", "gzip_bytes", "sparse_onnx_bytes", "compact_bytes",
                      "bound_bytes"))
    lines.append("-" * len(head))
    lines.append(f"{'TOTAL (files; bound = weights only)':<44} {o['weights']:>10} "
                 f"{o['sparsity']:>8.3f} {sizes} {o['compact_over_bound']:>7.3f}")
    return "\n".join(lines)


def export_summary(table: dict, verify_results: dict[str, dict]) -> dict:
    """The `export` block of summary.json from a size table and the verify checks."""
    overall = table["overall"]
    zeros = [r for r in verify_results.values() if "tensors" in r]
    parity = [r for r in verify_results.values() if "kind" in r]
    diffs = [r.get("max_box_diff", r.get("max_abs_diff", 0.0)) for r in parity]
    return {**{k: overall[k] for k in ("onnx_bytes", "gzip_bytes", "sparse_onnx_bytes",
                                         "compact_bytes", "bound_bytes")},
            "zeros_preserved": bool(zeros) and all(r["passed"] for r in zeros),
            "max_abs_diff": max(diffs, default=None)}
