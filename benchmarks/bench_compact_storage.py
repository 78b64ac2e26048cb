"""Compact archive bytes per weight against the information bound H(s)/8 + 4(1-s).

Two workloads at 50 / 80 / 90 / 95% unstructured sparsity:
- `random`: one fp32 tensor of `--numel` weights, random-normal values, random zero positions,
  in a one-node ONNX model (the whole archive file is counted);
- `tiny`: the tiny Mask R-CNN (compress.models.build, backbone "tiny"), every prunable conv/linear
  weight magnitude-pruned per layer, exported with export_full (weights-only and whole-file).
Prints a table and writes benchmarks/results/compact_storage.json.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_compact_storage.py [--numel 1000000]
"""
from __future__ import annotations

import argparse
import gzip
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.core.atomic import write_json
from compress.models.build import build_model
from export.compact import pack
from export.onnx_export import export_full
from export.sparse_initializers import to_sparse_initializers

LEVELS = (0.5, 0.8, 0.9, 0.95)
OUT = Path(__file__).parent / "results" / "compact_storage.json"


def entropy_bits(s: float) -> float:
    return 0.0 if s in (0.0, 1.0) else -(s * math.log2(s) + (1 - s) * math.log2(1 - s))


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
    s = float((weights == 0).mean())
    tensor = stats["tensors"][0]
    return {"workload": "random", "target_sparsity": sparsity, "sparsity": s, "numel": numel,
            "entropy_bits": entropy_bits(s),
            "mask_bits_per_weight": 8 * tensor["mask_bytes"] / numel,
            "values_bytes_per_nonzero": tensor["values_bytes"] / max(numel - int(s * numel), 1),
            "onnx_bytes_per_weight": onnx_path.stat().st_size / numel,
            "gzip_bytes_per_weight": len(gzip.compress(onnx_path.read_bytes(), 6)) / numel,
            "sparse_onnx_bytes_per_weight": sparse["sparse_bytes"] / numel,
            "compact_bytes_per_weight": stats["archive_bytes"] / numel,
            "bound_bytes_per_weight": stats["bound_bytes"] / numel,
            "ratio": stats["archive_bytes"] / stats["bound_bytes"]}


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
    weights_bytes = sum(t["encoded_bytes"] for t in stats["tensors"])
    zeros = sum(t["zeros"] for t in stats["tensors"])
    return {"workload": "tiny-maskrcnn", "target_sparsity": sparsity,
            "sparsity": zeros / stats["weights"], "numel": stats["weights"],
            "onnx_bytes": stats["original_bytes"], "compact_bytes": stats["archive_bytes"],
            "compact_weights_bytes": weights_bytes, "bound_bytes": stats["bound_bytes"],
            "ratio_weights_only": weights_bytes / stats["bound_bytes"],
            "ratio": stats["archive_bytes"] / stats["bound_bytes"]}


def print_table(rows: list[dict]) -> None:
    print(f"{'sparsity':>8} {'H(s)':>6} {'mask b/w':>8} {'onnx':>6} {'gzip':>6} {'sp-onnx':>7} "
          f"{'compact':>8} {'bound':>7} {'ratio':>6}   (random tensor, bytes/weight)")
    for r in (r for r in rows if r["workload"] == "random"):
        print(f"{r['sparsity']:>8.3f} {r['entropy_bits']:>6.3f} {r['mask_bits_per_weight']:>8.3f} "
              f"{r['onnx_bytes_per_weight']:>6.3f} {r['gzip_bytes_per_weight']:>6.3f} "
              f"{r['sparse_onnx_bytes_per_weight']:>7.3f} {r['compact_bytes_per_weight']:>8.4f} "
              f"{r['bound_bytes_per_weight']:>7.4f} {r['ratio']:>6.3f}")
    print(f"{'sparsity':>8} {'weights':>8} {'onnx B':>9} {'compact B':>9} {'bound B':>9} "
          f"{'w-only ratio':>12} {'file ratio':>10}   (tiny Mask R-CNN)")
    for r in (r for r in rows if r["workload"] != "random"):
        print(f"{r['sparsity']:>8.3f} {r['numel']:>8} {r['onnx_bytes']:>9} {r['compact_bytes']:>9} "
              f"{r['bound_bytes']:>9.0f} {r['ratio_weights_only']:>12.3f} {r['ratio']:>10.3f}")


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
    write_json(args.out, {"levels": list(LEVELS), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
