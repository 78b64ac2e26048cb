"""End to end: dense Mask R-CNN on ONNX Runtime vs magnitude-pruned tickets deployed on DeepSparse.

torchvision Mask R-CNN R-50 FPN with its default heads (weights=None, random init, seed 0), batch
1, images on an N x N canvas (the model's transform at min_size = max_size = N, so it does not
rescale). Tickets: magnitude pruning at 80% and 90% over the paper's prunable set
(`compress.models.prunable.default_prunable`: backbone body, FPN, RPN conv, box head fc6/fc7, mask
head convs and deconv; not the final predictors, shortcuts, biases or norms), distribution
`--distribution`: layerwise by default (each prunable tensor loses the same fraction, by |w|).
On random weights a global |w| ranking is decided by the init scale, not by training: at 80% it
prunes fc6/fc7 (fan-in 12544 / 1024, the smallest init) to 100% and the RPN conv to 99.9%, a
ticket no training would give; `--distribution global` runs it anyway. `--distribution runtime`
takes the per-layer counts from the runtime-aware allocator (`compress.lottery.allocator`, its
accuracy guard at the default mass bound) over the DeepSparse latency profile of the prunable
layers at this image size (built first, or reused from the profile cache). Random weights give
every class the same score (~1/91, under torchvision's 0.05 threshold, so nothing would be
detected and the mask head would never run): the class-1 bias of the box predictor is set to +5,
so proposals survive as class-1 detections and NMS, the mask head and mask pasting do real work.

Every model is exported (`compress.export.onnx_export.export_full`) and partitioned
(`compress.export.deploy.build_deployment`, parity with the full graph checked); rows: the full graph on
ONNX Runtime (dense, 80%, 90%), the deployment on DeepSparse (dense, 80%, 90%) and the dense
deployment with every part on ONNX Runtime (the partition and its torch mask pasting without
sparsity, so the table separates what the glue gives from what sparsity gives), all on the same
images and canvas, timed by the shared protocol (warm-up, runners interleaved call by call,
p50/p90/p99, spread, cores pinned, CPU flags and load recorded). The table gives each part's
time and share, and two ratios side by side: end to end (ORT dense full graph / ticket) and
sparsity's own gain (the dense model on the same partition and engine / ticket), with the
fraction of the ticket's call spent outside DeepSparse. Writes benchmarks/results/deploy.json.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_deploy.py [--image-size 512] [--iterations 5]
        [--distribution runtime] [--openvino]
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compress.core.atomic import write_json  # noqa: E402
from compress.lottery.allocator import runtime_allocation, layer_curves  # noqa: E402
from compress.lottery.sparseml_adapter import sparseml_loggers  # noqa: E402
from compress.quantize.qat import calibrated, quantized_params  # noqa: E402
from compress.evaluate.runtimes.pipeline import to_canvas  # noqa: E402
from compress.export.int8_export import export_int8  # noqa: E402
from compress.evaluate.runtimes.parity import summarize_int8  # noqa: E402
from compress.lottery.masks import (MASK_TYPES, Ranking, apply_mask, dense_mask, magnitude_prune,  # noqa: E402
                                    prune_to_counts)
from compress.lottery.profile import (build_profile, default_profile_path,  # noqa: E402
                                      layer_input_shapes, profile_key)
from compress.models.prunable import default_prunable  # noqa: E402
from compress.stages.export import parity_images  # noqa: E402
from compress.evaluate.engines import OPENVINO_ENGINES  # noqa: E402
from compress.evaluate.runtimes.pipeline_bench import bench_pipelines, speedups  # noqa: E402
from compress.evaluate.runtimes.protocol import finish, machine, pin_cores  # noqa: E402
from compress.export.deploy.build import deploy_exported  # noqa: E402
from compress.export.onnx_export import export_full  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "deploy.json"
SPARSITIES = (0.0, 0.8, 0.9)
INT8_SPARSITIES = (0.0, 0.9)


def make_model(size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=size,
                                  max_size=size).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] = 5.0
    return model


def runtime_profile(model: torch.nn.Module, size: int, cores: int) -> dict:
    """The DeepSparse latency profile of the prunable layers (cached like a run's profile)."""
    names = default_prunable(model)
    shapes = layer_input_shapes(model, names, size)
    path = default_profile_path(profile_key(model, names, shapes, "maskrcnn", "resnet50", size, cores))
    print(f"profile {path}", flush=True)
    return build_profile(model, names, size, cores, path, arch="maskrcnn", backbone="resnet50",
                         progress=sys.stderr.isatty())


def prune(model: torch.nn.Module, sparsity: float, distribution: str,
          profile: dict | None = None, mask_type: str = "unstructured") -> dict[str, float]:
    """Zero `sparsity` of the prunable weights by magnitude (per layer: the allocator's counts
    for `runtime`; `block4`: whole blocks of 4 input channels); achieved sparsity per part."""
    names = default_prunable(model)
    if sparsity > 0:
        params = dict(model.named_parameters())
        weights = {n: params[n].detach() for n in names}
        dense = dense_mask(model, names)
        if distribution == "runtime":
            total = round(sparsity * sum(w.numel() for w in weights.values()))
            mask = prune_to_counts(weights, dense, runtime_allocation(layer_curves(weights, dense, profile),
                                                            total).zeros)
        else:
            # block4: SparseML's FourBlockMaskCreator blocks, as a run's IMP rounds prune them
            mask = magnitude_prune(weights, dense, sparsity, Ranking(distribution, mask_type))
        apply_mask(model, mask)
    params = dict(model.named_parameters())
    groups: dict[str, list[int]] = {}
    for name in names:
        group = ".".join(name.split(".")[:2])
        zeros, total = groups.setdefault(group, [0, 0])
        groups[group] = [zeros + int((params[name] == 0).sum()), total + params[name].numel()]
    overall = sum(z for z, _ in groups.values()) / sum(t for _, t in groups.values())
    return {"overall": overall, **{g: z / t for g, (z, t) in groups.items()}}


def export_all(size: int, distribution: str, folder: Path, cores: int,
               mask_type: str = "unstructured") -> dict[float, dict]:
    base = make_model(size)
    images = parity_images(size)[:2]
    profile = runtime_profile(base, size, cores) if distribution == "runtime" else None
    out = {}
    for sparsity in SPARSITIES:
        model = copy.deepcopy(base)
        achieved = prune(model, sparsity, distribution, profile, mask_type)
        target = folder / f"s{int(sparsity * 100)}"
        export_full(model, target / "model.onnx", image_size=size, opset=17)
        manifest = deploy_exported(model, target / "model.onnx", target / "deploy",
                                   canvas_size=size, images=images)
        print(f"{sparsity:.0%}: sparsity {achieved['overall']:.3f}, deployment "
              f"{manifest.status} ({(manifest.parity or {}).get('detections_compared')} "
              f"detections compared)", flush=True)
        out[sparsity] = {"folder": target, "achieved": achieved, "parity": manifest.parity,
                         "model": model}
    return out


def export_int8_all(models: dict[float, dict], size: int, folder: Path) -> dict[float, dict]:
    """The dense model and the 90% ticket as INT8 (`compress.quantize.qat.calibrated`: SparseML's
    QAT structure, observers calibrated on the parity images; latency needs no trained values),
    exported like a run's quantize stage (`compress.export.int8_export.export_int8`: QDQ full graph,
    deployment with integer heavy parts, zeros verified)."""
    images = parity_images(size)[:2]
    out = {}
    for sparsity in INT8_SPARSITIES:
        model = calibrated(models[sparsity]["model"], images, loggers=sparseml_loggers(folder / "logs"))
        quantized = quantized_params(model)
        mask = {n: p.detach() != 0 for n, p in model.named_parameters() if n in quantized}
        target = folder / f"int8_s{int(sparsity * 100)}"
        record = export_int8(model, mask, quantized, target, image_size=size, opset=17,
                             images=images)
        print(f"INT8 {sparsity:.0%}: zeros preserved {record['zeros_preserved']}, torch parity "
              f"{record['parity_ok']}, deployment {record['deploy']['status']}, "
              f"{record['integer_op_fraction']:.0%} of heavy convs / matmuls integer", flush=True)
        out[sparsity] = {"folder": target, "record": record}
        if sparsity == 0.0:  # the dense QDQ partition itself: OpenVINO's INT8 on the same parts
            qdq = folder / "int8_s0_qdq"
            qdq.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target / "model.onnx", qdq / "model.onnx")
            deploy_exported(model, qdq / "model.onnx", qdq / "deploy", canvas_size=size,
                            images=images, judge=summarize_int8)
            out["qdq_partition"] = qdq
    return out


def dense_int8_baselines(models: dict[float, dict], size: int, python: Path,
                         folder: Path) -> dict[str, Any]:
    """NNCF and ONNX Runtime static INT8 of the dense fp32 full graph, built by
    benchmarks/int8_baselines.py in the side environment `python`; {name: file or {failed}}."""
    canvas = folder / "calibration.npy"
    np.save(canvas, np.stack([to_canvas(i, size, size)[0] for i in parity_images(size)]))
    done = subprocess.run([str(python), str(Path(__file__).with_name("int8_baselines.py")),
                           "--onnx", str(models[0.0]["folder"] / "model.onnx"), "--images",
                           str(canvas), "--out", str(folder / "baselines")],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {name: {"failed": reason} for name in ("nncf_int8", "ort_static_int8")}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--distribution", choices=("global", "layerwise", "runtime"),
                        default="layerwise")
    parser.add_argument("--openvino", action="store_true",
                        help="also time the dense model on OpenVINO (default precision and fp32), "
                             "full graph and on the same partition (pip install '.[openvino]')")
    parser.add_argument("--mask-type", choices=MASK_TYPES, default="unstructured",
                        help="block4: SparseML's VNNI blocks (4 input channels pruned together), "
                             "what DeepSparse's sparse INT8 kernels need")
    parser.add_argument("--int8", action="store_true",
                        help="also the dense model and the 90%% ticket as INT8 (QDQ on ONNX Runtime, "
                             "integer parts on DeepSparse; with --openvino the QDQ graph on OpenVINO)")
    parser.add_argument("--baselines-python", type=Path, default=None,
                        help="with --int8: the side environment's python that builds the dense "
                             "NNCF and ORT static INT8 baselines (benchmarks/int8_baselines.py)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.mask_type == "block4" and args.distribution == "runtime":
        parser.error("--mask-type block4 takes --distribution layerwise or global")
    pin_cores(args.cores)
    torch.set_num_threads(args.cores)
    info = machine(args.cores)
    with tempfile.TemporaryDirectory(prefix="bench_deploy_") as tmp:
        models = export_all(args.image_size, args.distribution, Path(tmp), args.cores,
                            args.mask_type)
        int8 = export_int8_all(models, args.image_size, Path(tmp)) if args.int8 else {}
        baselines = (dense_int8_baselines(models, args.image_size, args.baselines_python, Path(tmp))
                     if args.int8 and args.baselines_python else {})
        rows = bench_all(models, args, int8, baselines)
    write_json(args.out, {"machine": finish(info), "distribution": args.distribution,
                          "mask_type": args.mask_type,
                          "iterations": args.iterations, "warmup": args.warmup,
                          "results": rows, "ratios": ratios(rows),
                          "competitors": competitors(rows), "int8": int8_ratios(rows),
                          "int8_exports": {str(s): v["record"] for s, v in int8.items()},
                          "int8_baselines": baselines})
    print_table(rows, info)
    print(f"wrote {args.out}")


def bench_all(models: dict[float, dict], args: argparse.Namespace, int8: dict[float, dict],
              baselines: dict[str, Any]) -> list[dict]:
    """Every model on both engines, plus the dense deployment with every part on ONNX Runtime
    (what the partition and its torch mask pasting give without sparsity), plus the INT8 rows
    (`variant`): all interleaved call by call."""
    targets: dict[tuple, tuple] = {(s, engine): (entry["folder"], engine) for s, entry in models.items()
                                   for engine in ("onnxruntime", "deepsparse")}
    qdq = int8.pop("qdq_partition", None)
    for s, entry in int8.items():
        targets[(s, "deepsparse", "int8")] = (entry["folder"], "deepsparse")
    if qdq is not None and args.openvino:
        targets[(0.0, "openvino", "int8_qdq_partition")] = (qdq, "openvino", "deployment")
    if 0.0 in int8:
        targets[(0.0, "onnxruntime", "int8")] = (int8[0.0]["folder"], "onnxruntime")
        if args.openvino:
            targets[(0.0, "openvino", "int8")] = (int8[0.0]["folder"], "openvino", "full_graph")
    for name, engine in (("nncf_int8", "openvino"), ("ort_static_int8", "onnxruntime")):
        if isinstance(baselines.get(name), str):
            targets[(0.0, engine, name)] = (models[0.0]["folder"], engine, "full_graph",
                                            baselines[name])
    targets[(0.0, "onnxruntime/deployment")] = (models[0.0]["folder"], "onnxruntime", "deployment")
    if args.openvino:  # the dense model on OpenVINO: full graph, and on the same partition
        for engine in OPENVINO_ENGINES:
            for runner in ("full_graph", "deployment"):
                targets[(0.0, f"{engine}/{runner}")] = (models[0.0]["folder"], engine, runner)
    rows = bench_pipelines(targets, parity_images(args.image_size)[:2], warmup=args.warmup,
                           iterations=args.iterations, cores=args.cores)
    failed = [{"model": "maskrcnn_resnet50_fpn", "image_size": args.image_size, "sparsity": 0.0,
               "engine": engine, "variant": name, "runner": "full_graph", "status": "failed",
               "reason": baselines[name]["failed"], "p50_ms": None}
              for name, engine in (("nncf_int8", "openvino"), ("ort_static_int8", "onnxruntime"))
              if isinstance(baselines.get(name), dict)]
    return [{"model": "maskrcnn_resnet50_fpn", "image_size": args.image_size, "sparsity": key[0],
             "achieved_sparsity": models[key[0]]["achieved"], "parity": models[key[0]]["parity"],
             "variant": key[2] if len(key) > 2 else "fp32", **rows[key]} for key in targets] + failed


def competitors(rows: list[dict]) -> dict[str, float | None]:
    """ORT dense full graph / each dense OpenVINO row (its speed-up over ORT), and that row /
    the DeepSparse ticket at 90% (how far the ticket leads it)."""
    full = _p50(rows, "onnxruntime", 0.0, "full_graph")
    ticket = _p50(rows, "deepsparse", 0.9, "deployment")
    out: dict[str, float | None] = {}
    for r in rows:
        if r["engine"] in OPENVINO_ENGINES and r["status"] == "ok" and r.get("variant", "fp32") == "fp32":
            label = f"{r['engine']}_{r['runner']}"
            out[f"{label}_over_ort"] = full / r["p50_ms"] if full else None
            out[f"ticket_90_over_{label}"] = r["p50_ms"] / ticket if ticket else None
    return out


def _p50(rows: list[dict], engine: str, sparsity: float, runner: str,
         variant: str = "fp32") -> float | None:
    return next((r["p50_ms"] for r in rows if r["engine"] == engine and r["sparsity"] == sparsity
                 and r.get("runner") == runner and r.get("variant", "fp32") == variant
                 and r["status"] == "ok"), None)


def int8_ratios(rows: list[dict]) -> dict[str, Any]:
    """The sparse INT8 ticket (90%, DeepSparse deployment) against: ORT's dense fp32 full graph
    (`end_to_end`), the best dense INT8 row of this run (`over_best_dense_int8`, which it names),
    the dense INT8 model on the same deployment (`sparsity_gain`) and the fp32 90% ticket on
    DeepSparse (`int8_gain`)."""
    ticket = _p50(rows, "deepsparse", 0.9, "deployment", "int8")
    if not ticket:
        return {}
    dense_int8 = {f"{r['engine']}/{r['variant']}/{r['runner']}": r["p50_ms"] for r in rows
                  if r["sparsity"] == 0.0 and r.get("variant", "fp32") != "fp32"
                  and r["status"] == "ok"}
    best = min(dense_int8, key=dense_int8.get) if dense_int8 else None
    full = _p50(rows, "onnxruntime", 0.0, "full_graph")
    dense_ds = _p50(rows, "deepsparse", 0.0, "deployment", "int8")
    fp32_ticket = _p50(rows, "deepsparse", 0.9, "deployment")
    return {"ticket_int8_ms": ticket, "end_to_end": full / ticket if full else None,
            "best_dense_int8": best,
            "over_best_dense_int8": dense_int8[best] / ticket if best else None,
            "sparsity_gain": dense_ds / ticket if dense_ds else None,
            "int8_gain": fp32_ticket / ticket if fp32_ticket else None,
            "dense_int8_ms": dense_int8}


def ratios(rows: list[dict]) -> dict[str, float | None]:
    """p50 ratios, per sparsity s of a DeepSparse deployment (`pipeline_bench.speedups`):
    `end_to_end_<s>` = ORT dense full graph / this, `sparsity_gain_<s>` = the dense model on the
    same partition and engine (DeepSparse) / this, `non_deepsparse_share_<s>` = the fraction of
    the call spent outside DeepSparse; and `ort_dense_deployment_over_deepsparse_<s>` = the dense
    deployment with every part on ORT / this."""
    full = _p50(rows, "onnxruntime", 0.0, "full_graph")
    ort_deployed = _p50(rows, "onnxruntime", 0.0, "deployment")
    dense = _p50(rows, "deepsparse", 0.0, "deployment")
    out: dict[str, float | None] = {}
    for r in rows:
        if r["engine"] != "deepsparse" or r.get("variant", "fp32") != "fp32":
            continue
        key, found = int(r["sparsity"] * 100), speedups(full, dense, r)
        p50 = r["p50_ms"] if r["status"] == "ok" else None
        out[f"end_to_end_{key}"] = found["end_to_end"]
        out[f"sparsity_gain_{key}"] = found["sparsity_gain"]
        out[f"ort_dense_deployment_over_deepsparse_{key}"] = (ort_deployed / p50
                                                               if p50 and ort_deployed else None)
        out[f"non_deepsparse_share_{key}"] = found["outside_deepsparse"]
    return out


def print_table(rows: list[dict], info: dict) -> None:
    flags = ", ".join(f for f, on in info["flags"].items() if on) or "none of avx2/avx512/vnni"
    print(f"CPU {info['cpu']} ({flags}), {info['cores_used']} cores, load "
          f"{info['load_avg_before']}{' UNDER LOAD' if info['under_load'] else ''}")
    for r in rows:
        p50 = f"{r['p50_ms']:.1f}" if r.get("p50_ms") else "-"
        print(f"{r['sparsity']:.0%} {r['engine']:<12} {r.get('variant', 'fp32'):<15} "
              f"{r.get('runner', ''):<11} {r['status']:<7} "
              f"p50 {p50} ms{'  ' + r['reason'] if r.get('reason') else ''}")
    deployed = [r for r in rows if r.get("runner") == "deployment" and r["status"] == "ok"]
    names = list(dict.fromkeys(p for r in deployed for p in r["parts"]))
    header = " | ".join(f"{r['sparsity']:.0%} {r['engine']} {r.get('variant', 'fp32')}" for r in deployed)
    print(f"\n| part | engine (DeepSparse rows) | {header} |")
    print("|---|---|" + "---|" * len(deployed))
    ds = next((r for r in deployed if r["engine"] == "deepsparse"), deployed[0] if deployed else {})
    for name in names:
        cells = " | ".join(f"{r['parts'].get(name, 0):.1f} ({r['parts'].get(name, 0) / r['p50_ms']:.0%})"
                           for r in deployed)
        print(f"| {name} | {ds.get('part_engines', {}).get(name, '?')} | {cells} |")
    found = ratios(rows)
    int8 = int8_ratios(rows)
    if int8:
        print(f"INT8 90% ticket on DeepSparse {int8['ticket_int8_ms']:.1f} ms: end to end "
              f"{_fmt(int8['end_to_end'])} (ORT dense fp32 full graph / it), "
              f"{_fmt(int8['over_best_dense_int8'])} over the best dense INT8 ({int8['best_dense_int8']}), "
              f"sparsity's own gain at INT8 {_fmt(int8['sparsity_gain'])}, INT8 over the fp32 "
              f"ticket {_fmt(int8['int8_gain'])}")
    for key, value in competitors(rows).items():
        print(f"{key}: {_fmt(value)}")
    for key in (80, 90):
        print(f"{key}%: end to end {_fmt(found.get(f'end_to_end_{key}'))} (ORT dense full graph / "
              f"ticket), sparsity's own gain {_fmt(found.get(f'sparsity_gain_{key}'))} (DeepSparse "
              f"dense deployment / ticket), outside DeepSparse "
              f"{_fmt(found.get(f'non_deepsparse_share_{key}'), pct=True)}")


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if pct else f"{value:.2f}x"


if __name__ == "__main__":
    main()
