"""The benchmark stage (MACs, latency on each runtime) and `compress bench`."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from compress.core.atomic import write_json
from compress.core.errors import UserError
from compress.evaluate.analysis.macs import count_macs, macs_summary
from compress.recipe.schema import Recipe
from compress.core.folders import RunFolder
from compress.stages.base import StageContext
from compress.run.loaded import load_model
from compress.stages.export import deployment, parity_images, val_images
from compress.export.onnx_export import export_full
from compress.evaluate.runtimes.ort import physical_cores
from compress.evaluate.engines import BENCH_ENGINES, PIPELINE_ENGINES
from compress.evaluate.runtimes.bench import bench_onnx, format_bench_table
from compress.evaluate.runtimes.pipeline_bench import (bench_pipeline, bench_pipelines, describe_speedups,
                                              speedups)
from compress.evaluate.runtimes.protocol import finish, load_note, machine
from compress.evaluate.runtimes.pipeline import read_manifest
from compress.run.checks import CheckFailed, tag

log = logging.getLogger(__name__)


def macs_stage(loaded: Any) -> dict[str, Any]:
    """Dense and effective MACs of the ticket at the export image size."""

    size = loaded.recipe.image_size
    result = macs_summary(count_macs(loaded.model, size, loaded.mask))
    write_json(loaded.run.bench / "macs.json", result)
    return {"dense": result["dense"], "effective": result["effective"],
            "effective_fraction": result["effective_fraction"], "image_size": size}


def bench_stage(loaded: Any, images: list[Any] | None = None) -> list[dict[str, Any]]:
    """Both exported graphs on every engine of the recipe, and the whole detector end to end
    (full graph on ONNX Runtime vs the DeepSparse deployment, `graph: pipeline`, on `images`);
    bench/bench.json (rows, plus the machine they ran on)."""

    cfg, run = loaded.recipe.bench, loaded.run
    cores = physical_cores()
    info = machine(cores)
    rows = []
    for graph in ("model.onnx", "backbone.onnx"):
        path = run.export / graph
        if not path.is_file():
            raise UserError("not exported yet; run `compress export` first", file=str(path))
        size = loaded.recipe.image_size
        for row in bench_onnx(path, engines=cfg.engines, batch_sizes=cfg.batch_sizes,
                              warmup=cfg.warmup, iterations=cfg.iterations, image_size=size):
            rows.append({"graph": graph, **row})
    size = loaded.recipe.image_size
    engines = [e for e in cfg.engines if e in PIPELINE_ENGINES]
    if engines and _deployed(run.export / "deploy" / "manifest.json"):
        rows += pipeline_rows(loaded, engines, images or parity_images(size), cores)
    write_json(run.bench / "bench.json", rows)
    info = finish(info)
    write_json(run.bench / "machine.json", info)
    log.info("benchmark:\n%s", format_bench_table(rows))
    warn_bench(rows, info, run.bench / "machine.json")
    return rows


def pipeline_rows(loaded: Any, engines: list[str], images: list[Any],
                  cores: int) -> list[dict[str, Any]]:
    """The whole detector end to end, interleaved: the ticket's full graph on ONNX Runtime, its
    deployment on DeepSparse, and the dense model (round 0) deployed the same way, so the
    DeepSparse row carries both ratios (`speedups`: end to end and sparsity's own gain)."""
    cfg = loaded.recipe.bench
    targets: dict[str, tuple] = {e: (loaded.run.export, e) for e in engines}
    dense = dense_counterpart(loaded) if "deepsparse" in engines else None
    if dense is not None:
        targets["deepsparse_dense"] = (dense, "deepsparse")
    int8 = loaded.run.quantize / "export"
    int8_engines = [e for e in engines if _deployed(int8 / "deploy" / "manifest.json")]
    targets.update({f"{e}_int8": (int8, e) for e in int8_engines})
    found = bench_pipelines(targets, images, warmup=cfg.warmup, iterations=cfg.iterations,
                            cores=cores)
    rows = [{**found[e], "model": "ticket"} for e in engines]
    if dense is not None:
        rows.append({**found["deepsparse_dense"], "model": "dense (round 0)"})
    rows += [{**found[f"{e}_int8"], "model": "INT8 ticket"} for e in int8_engines]
    if "deepsparse" in int8_engines:
        say_int8(found)
    ticket = next((r for r in rows if r["engine"] == "deepsparse" and r["model"] == "ticket"), None)
    if ticket is not None:
        full = found.get("onnxruntime", {})
        dense_row = found.get("deepsparse_dense", {})
        ticket["speedups"] = speedups(full.get("p50_ms") if full.get("status") == "ok" else None,
                                      dense_row.get("p50_ms") if dense_row.get("status") == "ok"
                                      else None, ticket)
        say_speedups(ticket["speedups"])
    return rows


def dense_counterpart(loaded: Any) -> Path | None:
    """bench/dense_export: round 0's dense model exported and deployed like the ticket (reused
    when its deployment is already there), or None (a dense ticket, no dense round 0)."""
    ckpt = loaded.run.round(0).checkpoint
    if not loaded.mask or all(bool(m.all()) for m in loaded.mask.values()) or not ckpt.is_file():
        return None
    out = loaded.run.bench / "dense_export"
    manifest = out / "deploy" / "manifest.json"
    if _deployed(manifest):
        return out
    dense = load_model(ckpt)
    if any(not bool(m.all()) for m in dense.mask.values()):
        return None  # round 0 is already masked (e.g. mask transfer): no dense model here
    size = loaded.recipe.image_size
    model = dense.model.eval()
    export_full(model, out / "model.onnx", image_size=size, opset=loaded.recipe.export.opset)
    deployment(model, out / "model.onnx", out / "deploy", size, parity_images(size))
    if not _deployed(manifest):
        log.warning("bench: the dense round-0 model has no working deployment (%s); sparsity's "
                    "own gain is not measured", manifest, extra=tag("engine_failed"))
        return None
    return out


def _deployed(manifest: Path) -> bool:
    """An export's deployment that can be run: written, and its parity check passed."""
    return manifest.is_file() and json.loads(manifest.read_text()).get("status") == "ok"


def say_int8(found: dict[str, dict[str, Any]]) -> None:
    """The INT8 ticket's deployed time against the fp32 ticket and ORT's full graphs, one line."""
    def p50(key: str) -> float | None:
        row = found.get(key) or {}
        return row.get("p50_ms") if row.get("status") == "ok" else None
    mine = p50("deepsparse_int8")
    if mine is None:
        return
    parts = [f"{label} {p50(key) / mine:.2f}x" for key, label in
             (("onnxruntime", "vs ORT fp32 full graph"), ("onnxruntime_int8", "vs ORT INT8 full graph"),
              ("deepsparse", "vs the fp32 ticket on DeepSparse")) if p50(key)]
    log.info("deployment INT8: %.1f ms; %s", mine, ", ".join(parts) or "nothing to compare")


def say_speedups(found: dict[str, float | None]) -> None:
    """The deployed ticket's two ratios on the console; slower than ORT's full graph is warned."""
    line, slower = describe_speedups(found)
    log.info("deployment: %s", line)
    if slower:
        log.warning("deployment: %s", slower, extra=tag("deployment_slower"))


def warn_bench(rows: list[dict[str, Any]], info: dict[str, Any], machine_path: Path) -> None:
    """One warning line per failed row and one if the figures were taken under load. The full
    R-CNN graph failing on DeepSparse while the deployment ran is the known limit the deployment
    exists for (DESIGN.md): said at info level, not warned."""
    deployed = any(r.get("graph") == "pipeline" and r.get("engine") == "deepsparse"
                   and r.get("status") == "ok" for r in rows)
    for row in rows:
        graph = row.get("graph") or row.get("model")
        if row.get("status") != "failed":
            continue
        if deployed and row["engine"] == "deepsparse" and graph == "model.onnx":
            log.info("bench model.onnx deepsparse: %s (expected for the full graph; the "
                     "deployment's pipeline row stands in)", row.get("reason"))
            continue
        log.warning("bench %s %s batch %s: FAILED (%s)", graph, row["engine"], row.get("batch"),
                    row.get("reason"), extra=tag("engine_failed"))
    note = load_note(info)
    if note:
        log.warning("bench: %s (%s)", note, machine_path, extra=tag("under_load"))


class MacsStage:
    name = "macs"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.bench.enabled

    def done(self, run: RunFolder) -> bool:
        return "macs" in run.read_summary()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        return macs_stage(ctx.loaded)


class BenchStage:
    name = "bench"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.bench.enabled and recipe.export.enabled

    def done(self, run: RunFolder) -> bool:
        return "bench" in run.read_summary()

    def run(self, ctx: StageContext) -> list[dict[str, Any]]:
        return bench_stage(ctx.loaded, val_images(ctx.loaders))


def bench_command(model: Path, *, engines: list[str], batches: list[int], iterations: int,
                  warmup: int, out: Path | None) -> list[dict[str, Any]]:
    """`compress bench MODEL.onnx | RUN/export | RUN`: an ONNX file on each engine x batch, or an
    export folder's deployment end to end (graph `pipeline`; batch 1). No engine giving a figure (every
    one failed or was skipped) is `CheckFailed` (exit 1)."""
    cores = physical_cores()
    info = machine(cores)
    if model.is_dir():
        if (model / "export" / "deploy").is_dir():  # a run folder: its export
            model = model / "export"
        rows = _bench_export(model, engines, batches, iterations, warmup, cores)
        target = out or model.parent / "bench" / "bench.json"  # the run folder's bench/
    elif model.suffix == ".onnx":
        rows = bench_onnx(model, engines=engines or BENCH_ENGINES, batch_sizes=batches,
                          warmup=warmup, iterations=iterations, cores=cores)
        target = out or model.parent / "bench.json"
    else:
        raise UserError("compress bench takes an ONNX file or an export folder holding "
                        "deploy/manifest.json (see `compress export`)", file=str(model))
    write_json(target, rows)
    machine_path, info = target.with_name("machine.json"), finish(info)
    write_json(machine_path, info)
    print(format_bench_table(rows))
    warn_bench(rows, info, machine_path)
    if not any(row.get("status") == "ok" for row in rows):
        reasons = "; ".join(f"{r['engine']}: {r['status']} ({r.get('reason')})" for r in rows)
        raise CheckFailed(f"bench: no requested engine gave a figure: {reasons}")
    return rows


def _bench_export(folder: Path, engines: list[str], batches: list[int], iterations: int,
                  warmup: int, cores: int) -> list[dict[str, Any]]:
    """The deployment of an export folder against the full graph on ONNX Runtime, end to end."""
    manifest = read_manifest(folder)  # ModelFileError (exit 2) without export/deploy/
    unknown = [e for e in engines if e not in PIPELINE_ENGINES]
    if unknown:
        raise UserError(f"an export folder's deployment runs on {', '.join(PIPELINE_ENGINES)}, "
                        f"not {unknown[0]}", key="--engine")
    if any(b != 1 for b in batches):
        raise UserError("an export folder's deployment is timed at batch 1 (one image per call)",
                        key="--batch")
    canvas = manifest.canvas
    return bench_pipeline(folder, parity_images(min(canvas.height, canvas.width)),
                          engines=engines or list(PIPELINE_ENGINES), warmup=warmup,
                          iterations=iterations, cores=cores)
