"""Runtime-aware vs global vs layerwise sparsity on the R-50 FPN backbone: DeepSparse latency, and
predicted (per-layer profile) vs measured whole-backbone latency.

R-50 FPN backbone (ResNet-50 body + FPN, random weights, as `bench_sparse_backbone.py`), 512 px,
batch 1. Prunable set: every conv weight. At 80% and 90% total sparsity three allocations:
global magnitude, layerwise (uniform, stem dense) and runtime-aware (`compress.lottery.allocator`
over the DeepSparse per-layer latency profile, built or reused from the profile cache). Timing:
passes alternate ONNX Runtime on the dense file and one DeepSparse child that compiles every file
and runs them in turn each iteration (A B A B); the best pass per file is kept (other work only
slows a pass down). Predicted latency = sum of the profiled layers at each allocation's per-layer
sparsity; a per-layer sum leaves out what the whole graph adds (adds, ReLUs, upsampling, the
memory traffic between layers) and what it saves (fusion); the sum is the prediction, and a
calibrated one (scaled by the measured dense whole-graph latency over the dense prediction) is
written beside it for comparison. Writes benchmarks/results/runtime_aware.json.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_runtime_aware.py [--cores 2] [--size 512]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sparse_backbone import export, make_model  # noqa: E402
from compress.core.atomic import write_json  # noqa: E402
from compress.lottery.allocator import runtime_allocation, global_allocation, layer_curves  # noqa: E402
from compress.lottery.masks import apply_mask, prune_to_counts  # noqa: E402
from compress.lottery.profile import (build_profile, default_profile_path, layer_input_shapes,  # noqa: E402
                                      predicted_latency_ms, profile_key)
from compress.evaluate.runtimes.bench import bench_onnx  # noqa: E402
from compress.evaluate.runtimes.deepsparse import deepsparse_bench_files  # noqa: E402
from compress.evaluate.runtimes.protocol import finish, machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_aware.json"
ARCH, BACKBONE = "r50_fpn_backbone", "resnet50"


def conv_names(model: torch.nn.Module) -> list[str]:
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def allocation_zeros(kind: str, sparsity: float, weights: dict, profile: dict, mass_bound: float) -> dict[str, int]:
    """Zeros per layer for one allocation of `sparsity` of all conv weights."""
    names = list(weights)
    total = round(sparsity * sum(w.numel() for w in weights.values()))
    if kind == "layerwise":  # uniform, stem dense
        return {n: (0 if i == 0 else round(sparsity * weights[n].numel())) for i, n in enumerate(names)}
    dense = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    if kind == "global":
        return global_allocation(layer_curves(weights, dense, profile, 1.0, 1.0), total).zeros
    return runtime_allocation(layer_curves(weights, dense, profile), total, mass_bound).zeros


def make_files(model, names, profile, size, sparsities, mass_bound, workdir: Path) -> list[dict]:
    state = model.state_dict()
    weights = {n: state[n].detach().clone() for n in names}
    numel = {n: w.numel() for n, w in weights.items()}
    plans = [("dense", 0.0)] + [(k, s) for s in sparsities for k in ("global", "layerwise", "runtime")]
    out = []
    for kind, sparsity in plans:
        zeros = {n: 0 for n in names} if kind == "dense" else \
            allocation_zeros(kind, sparsity, weights, profile, mass_bound)
        mask = prune_to_counts(weights, {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}, zeros)
        pruned = copy.deepcopy(model)
        apply_mask(pruned, mask)
        path = workdir / f"{kind}_{int(sparsity * 100)}.onnx"
        onnx_sparsity = export(pruned, size, path)
        per_layer = {n: zeros[n] / numel[n] for n in names}
        out.append({"allocation": kind, "target_sparsity": sparsity, "path": path,
                    "sparsity": sum(zeros.values()) / sum(numel.values()),
                    "onnx_weight_sparsity": onnx_sparsity, "layer_sparsity": per_layer,
                    "predicted_raw_ms": sum(predicted_latency_ms(profile, per_layer).values())})
        print(f"  {kind} {sparsity:.0%}: predicted {out[-1]['predicted_raw_ms']:.1f} ms (raw sum)", flush=True)
    return out


def time_files(files: list[dict], size: int, cores: int, iterations: int, repeat: int) -> None:
    """Best-of-`repeat` p50 per file: ORT on the dense file, DeepSparse on all (interleaved)."""
    for _ in range(repeat):
        ort = bench_onnx(files[0]["path"], engines=("onnxruntime",), batch_sizes=(1,), warmup=3,
                         iterations=iterations, image_size=size, cores=cores)[0]
        if ort.get("p50_ms") and ort["p50_ms"] < files[0].get("ort", {}).get("p50_ms", 1e18):
            files[0]["ort"] = {**ort, "load_avg_1min": os.getloadavg()[0]}
        result = deepsparse_bench_files([(f["path"], (1, 3, size, size)) for f in files], warmup=2,
                                        iterations=iterations, num_cores=cores, interleave=True)
        load = os.getloadavg()[0]
        print(f"  pass: ORT dense {ort.get('p50_ms')} ms, DeepSparse {result['status']} "
              f"(load {load:.1f})", flush=True)
        for f, row in zip(files, result.get("files", [{}] * len(files))):
            old = f.get("ds", {}).get("p50_ms", 1e18)
            if result["status"] != "ok":
                f.setdefault("ds", {"status": result["status"], "reason": result.get("reason")})
            elif row["p50_ms"] < old:
                f["ds"] = {"status": "ok", "load_avg_1min": load,
                           **{k: row[k] for k in ("p50_ms", "p90_ms", "min_ms", "compile_s")}}


def rows_of(files: list[dict]) -> list[dict]:
    """Rows; the prediction is the raw per-layer sum (nothing measured on the whole graph goes
    into it); `calibrated_*` scale it by the dense point, for comparison."""
    dense_ds = files[0]["ds"].get("p50_ms")
    scale = dense_ds / files[0]["predicted_raw_ms"] if dense_ds else None
    ort_dense = files[0]["ort"]["p50_ms"]
    rows = [{"engine": "onnxruntime", "allocation": "dense", "sparsity": 0.0, "status": "ok",
             **{k: files[0]["ort"].get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "load_avg_1min")}}]
    for f in files:
        ds = f["ds"]
        row = {"engine": "deepsparse", "allocation": f["allocation"], "sparsity": f["sparsity"],
               "target_sparsity": f["target_sparsity"], "onnx_weight_sparsity": f["onnx_weight_sparsity"],
               **ds, "predicted_ms": f["predicted_raw_ms"],
               "calibrated_ms": f["predicted_raw_ms"] * scale if scale else None}
        if ds.get("p50_ms"):
            row["vs_ort_dense"] = ort_dense / ds["p50_ms"]
            row["error"] = f["predicted_raw_ms"] / ds["p50_ms"] - 1
            row["calibrated_error"] = row["calibrated_ms"] / ds["p50_ms"] - 1 if scale else None
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'engine':<12}{'allocation':<11}{'sparsity':>9}{'p50 ms':>9}{'xORTd':>7}{'predicted':>10}{'err':>7}{'calib':>9}{'err':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        def f(key, spec):
            return format(r[key], spec) if r.get(key) is not None else "-"
        lines.append(f"{r['engine']:<12}{r['allocation']:<11}{r['sparsity']:>9.3f}{f('p50_ms', '9.1f'):>9}"
                     f"{f('vs_ort_dense', '6.2f'):>7}{f('predicted_ms', '9.1f'):>10}"
                     f"{f('error', '6.1%'):>7}{f('calibrated_ms', '8.1f'):>9}{f('calibrated_error', '6.1%'):>7}")
    within = [r for r in rows if r.get("error") is not None]
    lines.append(f"prediction within 15% of the measured p50: "
                 f"{sum(abs(r['error']) <= 0.15 for r in within)} of {len(within)} allocations")
    lines.append("xORTd: ORT dense p50 / this p50; predicted: sum of per-layer profile latencies "
                 "(monotone curves); calib: predicted x (DeepSparse dense measured / predicted dense).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sparsities", default="0.8,0.9")
    parser.add_argument("--mass-bound", type=float, default=0.5)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="timing passes (best kept)")
    parser.add_argument("--profile-iterations", type=int, default=8)
    parser.add_argument("--profile", type=Path, help="profile JSON (default: the profile cache)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.cores)
    start, info = time.time(), machine(args.cores)
    model = make_model(ARCH)
    names = conv_names(model)
    shapes = layer_input_shapes(model, names, args.size)
    path = args.profile or default_profile_path(
        profile_key(model, names, shapes, ARCH, BACKBONE, args.size, args.cores))
    print(f"profile {path}", flush=True)
    profile = build_profile(model, names, args.size, args.cores, path, arch=ARCH, backbone=BACKBONE,
                            warmup=1, iterations=args.profile_iterations, progress=sys.stderr.isatty())
    profile_s = time.time() - start
    with tempfile.TemporaryDirectory(prefix="runtime_aware_") as tmp:
        files = make_files(model, names, profile, args.size,
                           [float(s) for s in args.sparsities.split(",")], args.mass_bound, Path(tmp))
        time_files(files, args.size, args.cores, args.iterations, args.repeat)
    rows = rows_of(files)
    print(format_table(rows))
    info = finish(info)
    if info["under_load"]:
        print("warning: the load average exceeded the cores while timing: other work shared them; "
              "figures are pessimistic and noisy, compare only ratios within this run")
    write_json(args.out, {
        "machine": {**info, "torch": torch.__version__, "wall_s": time.time() - start, "profile_s": profile_s},
        "model": ARCH, "image_size": args.size, "batch": 1, "iterations": args.iterations,
        "repeat": args.repeat, "mass_bound": args.mass_bound, "profile": str(path),
        "rows": rows,
        "layer_sparsity": {f"{f['allocation']}_{int(f['target_sparsity'] * 100)}": f["layer_sparsity"]
                           for f in files}})
    print(f"wrote {args.out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
