"""Compact archive size against what it can fairly be compared with.

- The mask coder against the mask entropy: for the tensors stored sparse, the bytes that say which
  weights are zero over numel * H(s) / 8 (H the binary entropy of the zero fraction s).
- The whole archive against general-purpose compressors of the same ONNX file: `xz -9` (Python's
  lzma, preset 9, the same stream the xz tool writes) and `zstd -19` when a zstd Python module is
  installed (zstandard or pyzstd; the row records which, or that none was).

(The old "bound" H(s)/8 + 4(1-s) assumed incompressible fp32 values; the archive compresses the
sign/exponent byte plane, so it lands below that bound and the ratio said nothing.)

Two workloads at 50 / 80 / 90 / 95% unstructured sparsity:
- `random`: one fp32 tensor of `--numel` weights, random-normal values, random zero positions,
  in a one-node ONNX model (the whole archive file is counted);
- `tiny`: the tiny Mask R-CNN (compress.models.build, backbone "tiny"), every prunable conv/linear
  weight magnitude-pruned per layer, exported with export_full.
Prints a table and writes benchmarks/results/compact_storage.json.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_compact_storage.py [--numel 1000000]
"""
from __future__ import annotations

import argparse
import gzip
import importlib
import lzma
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.core.atomic import write_json
from compress.models.build import build_model
from compress.export.compact import pack
from compress.export.onnx_export import export_full
from compress.export.sparse_initializers import to_sparse_initializers

LEVELS = (0.5, 0.8, 0.9, 0.95)
OUT = Path(__file__).parent / "results" / "compact_storage.json"


def entropy_bits(s: float) -> float:
    return 0.0 if s in (0.0, 1.0) else -(s * math.log2(s) + (1 - s) * math.log2(1 - s))


def zstd_compressor() -> tuple[str | None, Callable[[bytes], bytes] | None]:
    """(module name, level-19 compress function) of an installed zstd module, else (None, None)."""
    for name in ("zstandard", "pyzstd"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name == "zstandard":
            return name, module.ZstdCompressor(level=19).compress
        return name, lambda data: module.compress(data, 19)
    return None, None


def general_purpose(data: bytes, archive_bytes: int) -> dict[str, Any]:
    """xz -9 (and zstd -19 if a module is installed) of `data`, against the archive's size."""
    xz = len(lzma.compress(data, preset=9))
    module, zstd = zstd_compressor()
    row: dict[str, Any] = {"xz9_bytes": xz, "compact_over_xz9": archive_bytes / xz,
                           "zstd_module": module, "zstd19_bytes": None, "compact_over_zstd19": None}
    if zstd is not None:
        row["zstd19_bytes"] = len(zstd(data))
        row["compact_over_zstd19"] = archive_bytes / row["zstd19_bytes"]
    return row


def mask_vs_entropy(tensors: list[dict]) -> dict[str, Any]:
    """Mask bytes of the sparse-stored tensors over their mask entropy numel * H(s) / 8."""
    sparse = [t for t in tensors if t["form"] == "sparse"]
    entropy = sum(t["numel"] * entropy_bits(t["zeros"] / t["numel"]) / 8 for t in sparse)
    mask = sum(t["mask_bytes"] for t in sparse)
    return {"sparse_tensors": len(sparse), "mask_bytes": mask, "mask_entropy_bytes": entropy,
            "mask_over_entropy": mask / entropy if entropy else None}


def random_row(numel: int, sparsity: float, folder: Path) -> dict:
    rng = np.random.default_rng(int(sparsity * 1000))
    weights = rng.standard_normal(numel).astype(np.float32)
    weights[rng.random(numel) < sparsity] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["y"])], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [numel])],
        [numpy_helper.from_array(weights, "W")])
    onnx_path = folder / f"random_{sparsity}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(onnx_path))
    stats = pack(onnx_path, folder / "random.lthz")
    sparse = to_sparse_initializers(onnx_path, folder / "random_sparse.onnx")
    data = onnx_path.read_bytes()
    s = float((weights == 0).mean())
    return {"workload": "random", "target_sparsity": sparsity, "sparsity": s, "numel": numel,
            "entropy_bits": entropy_bits(s), **mask_vs_entropy(stats["tensors"]),
            "onnx_bytes": len(data), "gzip6_bytes": len(gzip.compress(data, 6)),
            "sparse_onnx_bytes": sparse["sparse_bytes"], "compact_bytes": stats["archive_bytes"],
            **general_purpose(data, stats["archive_bytes"])}


@torch.no_grad()
def tiny_row(sparsity: float, folder: Path) -> dict:
    torch.manual_seed(0)
    model = build_model("maskrcnn", "tiny", 3, min_size=128, max_size=128).eval()
    for name, param in model.named_parameters():
        if param.ndim > 1 and "mask_fcn_logits" not in name:
            k = int(sparsity * param.numel())
            cut = param.abs().flatten().kthvalue(k).values if k else -1.0
            param.masked_fill_(param.abs() <= cut, 0.0)
    onnx_path = export_full(model, folder / "tiny.onnx", image_size=128)
    stats = pack(onnx_path, folder / "tiny.lthz")
    data = onnx_path.read_bytes()
    zeros = sum(t["zeros"] for t in stats["tensors"])
    return {"workload": "tiny-maskrcnn", "target_sparsity": sparsity,
            "sparsity": zeros / stats["weights"], "numel": stats["weights"],
            **mask_vs_entropy(stats["tensors"]), "onnx_bytes": len(data),
            "gzip6_bytes": len(gzip.compress(data, 6)), "compact_bytes": stats["archive_bytes"],
            **general_purpose(data, stats["archive_bytes"])}


def print_table(rows: list[dict]) -> None:
    module = rows[0]["zstd_module"] if rows else None
    print(f"{'workload':>13} {'sparsity':>8} {'mask/H':>7} {'onnx B':>9} {'gzip-6 B':>9} "
          f"{'xz-9 B':>9} {'zstd-19 B':>9} {'compact B':>9} {'cmp/xz':>7} {'cmp/zstd':>8}")
    for r in rows:
        mask = f"{r['mask_over_entropy']:.3f}" if r["mask_over_entropy"] else "-"
        zstd = r["zstd19_bytes"] if r["zstd19_bytes"] is not None else "-"
        ratio = f"{r['compact_over_zstd19']:.3f}" if r["compact_over_zstd19"] else "-"
        print(f"{r['workload']:>13} {r['sparsity']:>8.3f} {mask:>7} {r['onnx_bytes']:>9} "
              f"{r['gzip6_bytes']:>9} {r['xz9_bytes']:>9} {zstd:>9} {r['compact_bytes']:>9} "
              f"{r['compact_over_xz9']:>7.3f} {ratio:>8}")
    if module is None:
        print("zstd -19: no zstd Python module (zstandard, pyzstd) is installed; xz -9 only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [random_row(args.numel, s, Path(tmp)) for s in LEVELS]
        rows += [tiny_row(s, Path(tmp)) for s in LEVELS]
    print_table(rows)
    module = zstd_compressor()[0]
    write_json(args.out, {"levels": list(LEVELS), "zstd_module": module,
                          "note": None if module else "no zstd Python module installed: xz -9 only",
                          "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
