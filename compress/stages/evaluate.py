"""The evaluation stage: the ticket on torch, the deployed ONNX on ONNX Runtime, the partitioned
DeepSparse deployment (checked against ONNX Runtime); TIDE, keypoint errors and dense-vs-ticket AP deltas; `compress evaluate`."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from compress.core.atomic import write_json
from compress.core.errors import ModelFileError, UserError
from compress.run.torch_eval import evaluate_torch
from compress.recipe.schema import Recipe
from compress.core.folders import RunFolder
from compress.stages.base import StageContext
from compress.evaluate.metrics.scorer import TASK_IOU_TYPES, Scorer
from compress.evaluate.runtimes.pipeline import OnnxDetector, predict_onnx
from compress.evaluate.runtimes.deepsparse_server import DeepSparseFailed
from compress.evaluate.runtimes.parity import BOX_TOLERANCE_PX, summarize
from compress.evaluate.runtimes.pipeline import DeployedDetector
from compress.evaluate.analysis.ap_deltas import ap_deltas, plot_ap_deltas
from compress.evaluate.analysis.tide import compare_tide, run_tide
from compress.evaluate.analysis.keypoint_errors import analyze_keypoint_errors
from compress.data.loaders import build_dataset, make_loader
from compress.run.loaded import load_model, run_of
from compress.run.checks import CheckFailed, tag
from compress.models.build import ARCH_TASK
from compress.run.setup import ground_truth_path
from compress.evaluate.engines import DEPLOYMENT, ENGINES, EVALUATE, EVALUATE_ENGINES, FULL_GRAPH, TICKET
from compress.evaluate.engines import running

log = logging.getLogger(__name__)
EVAL_PARITY_IMAGES = 4  # validation images evaluate runs the deployment on, DeepSparse vs ORT


def evaluate_engine(engine: str, model_path: Path, loaded: Any, loader: Any, scorer: Scorer,
                    out_dir: Path, progress: bool) -> dict[str, Any]:
    """COCO metrics (for a VOC set also the Pascal VOC metric) of one engine, by `scorer`; writes
    results.json + metrics.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if engine not in EVALUATE_ENGINES:
        raise UserError(f"engine '{engine}' is not one of {', '.join(EVALUATE_ENGINES)}",
                        key="--engine")
    evaluators = {  # by what the engine runs
        TICKET: lambda: evaluate_torch(loaded.model, loader, torch.device("cpu"), scorer, out_dir,
                                       progress),
        FULL_GRAPH: lambda: scorer.score_predictions(predict_onnx(OnnxDetector(model_path), loader),
                                                     out_dir),
        DEPLOYMENT: lambda: evaluate_deployment(model_path.parent, loader, scorer, out_dir),
    }
    return evaluators[ENGINES[engine].runs]()


def evaluate_deployment(export_dir: Path, loader: Any, scorer: Scorer, out_dir: Path,
                        judge: Callable[[list], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The DeepSparse deployment (export/deploy) on the validation set: COCO metrics, plus its
    detections against the same deployment on ONNX Runtime (parity.json). A crash, a timeout, a
    parity failure or a model without a deployment is a failed row, never a silent ok. `judge`
    decides the parity (default `summarize` within BOX_TOLERANCE_PX; INT8: `summarize_int8`)."""
    try:
        with DeployedDetector(export_dir, engine="deepsparse") as detector:
            predictions = predict_onnx(detector, loader)
            parity = deployment_parity(detector, export_dir, loader, judge=judge)
            fractions = detector.supported_op_fraction
    except (DeepSparseFailed, ModelFileError) as err:
        result = {"engine": "deepsparse", "status": "failed", "reason": str(err)}
        write_json(out_dir / "parity.json", result)
        return result
    write_json(out_dir / "parity.json", parity)
    metrics = scorer.score_predictions(predictions, out_dir)
    status = parity["status"] if parity["status"] in ("ok", "unchecked") else "failed"
    return {**metrics, "engine": "deepsparse", "graph": "pipeline", "status": status,
            "parity_vs_onnxruntime": parity, "supported_op_fraction": fractions}


def deployment_parity(detector: DeployedDetector, export_dir: Path, loader: Any,
                      images: int = EVAL_PARITY_IMAGES,
                      judge: Callable[[list], dict[str, Any]] | None = None) -> dict[str, Any]:
    """DeepSparse against ONNX Runtime, same deployment and canvas, on up to `images` images:
    boxes within 0.5 px, same labels and counts; comparing nothing fails."""
    batch = [image for image, _ in zip(_images(loader), range(images))]
    with DeployedDetector(export_dir, engine="onnxruntime") as reference:
        pairs = [(reference(image), detector(image)) for image in batch]
    return judge(pairs) if judge is not None else summarize(pairs, box_tolerance_px=BOX_TOLERANCE_PX)


def _images(loader: Any) -> Any:
    for images, _ in loader:
        yield from images


def analyses(run: RunFolder, engine_dir: Path, gt_path: Path, task: str, tide: bool,
             keypoint_errors: bool) -> dict[str, Any]:
    """TIDE (boxes, masks), keypoint errors and dense-vs-ticket AP deltas for one engine's results."""

    results_path = engine_dir / "results.json"
    dense_round = run.round(0)
    has_dense = dense_round.eval_results.is_file() and run.finished_rounds()[-1:] != [0]
    out: dict[str, Any] = {}
    for iou_type in TASK_IOU_TYPES[task]:
        if tide and iou_type in ("bbox", "segm"):
            out[f"tide_{iou_type}"] = run_tide(gt_path, results_path, iou_type, engine_dir, "ticket")
            if has_dense:
                compare_tide(dense_round.eval_results, results_path, gt_path, iou_type, engine_dir)
        if keypoint_errors and iou_type == "keypoints":
            results = json.loads(results_path.read_text())
            out["keypoint_errors"] = analyze_keypoint_errors(gt_path, results, engine_dir)["counts"]
    if has_dense:
        dense = json.loads(dense_round.eval_metrics.read_text())
        ticket = json.loads((engine_dir / "metrics.json").read_text())
        deltas = {t: ap_deltas(dense[t], ticket[t], t) for t in TASK_IOU_TYPES[task]}
        write_json(engine_dir / "ap_deltas.json", deltas)
        plot_ap_deltas(deltas["bbox"], run.plots / "ap_deltas_bbox.png")
    return out


class EvaluateStage:
    """The ticket on every engine of the recipe, with the analyses; summary.json `eval`."""
    name = "eval"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.evaluate.enabled

    def done(self, run: RunFolder) -> bool:
        return "eval" in run.read_summary()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        recipe, run, data = ctx.recipe, ctx.run, ctx.data
        results: dict[str, Any] = {}
        for engine in recipe.evaluate.engines:
            if ENGINES[engine].needs_export and not recipe.export.enabled:
                log.warning("evaluate: %s needs the export stage; skipped", engine)
                continue
            out_dir = run.eval_dir(engine)
            results[engine] = evaluate_engine(engine, run.export / "model.onnx", ctx.loaded,
                                              ctx.loaders["val"], data.scorer, out_dir,
                                              ctx.progress)
            if results[engine].get("status", "ok") == "ok":
                results[engine].update(analyses(run, out_dir, data.gt_path, data.task,
                                                recipe.evaluate.tide, recipe.evaluate.keypoint_errors))
        for engine, result in results.items():
            warn_if_failed(engine, result, results)
        if "torch" in results and "onnxruntime" in results:
            results["onnxruntime_minus_torch_bbox_mAP"] = (results["onnxruntime"]["bbox_mAP"]
                                                           - results["torch"]["bbox_mAP"])
        return results


def warn_if_failed(engine: str, result: dict[str, Any], others: dict[str, Any]) -> bool:
    """One warning line for an engine whose evaluation failed (a crash, or metrics whose parity
    check failed, which are kept but not to be trusted); True when it failed."""
    if not isinstance(result, dict) or result.get("status", "ok") == "ok":
        return False
    if result.get("status") == "unchecked":  # nothing to compare (an INT8 judge): said, not warned
        log.info("evaluate %s: parity vs ONNX Runtime unchecked (%s)", engine,
                 (result.get("parity_vs_onnxruntime") or {}).get("reason"))
        return False
    parity = result.get("parity_vs_onnxruntime")
    if parity is None:
        log.warning("evaluate %s: FAILED (%s); no metrics", engine, result.get("reason"),
                    extra=tag("engine_failed"))
        return True
    reference = (others.get("onnxruntime") or {}).get("bbox_mAP")
    versus = f" (onnxruntime {reference:.4f})" if isinstance(reference, float) else ""
    log.warning("evaluate %s: parity check vs ONNX Runtime FAILED (%s); its bbox mAP %.4f%s is "
                "not to be trusted", engine, parity.get("reason"), result.get("bbox_mAP", float("nan")),
                versus, extra=tag("parity"))
    return True


def evaluate_command(model: Path, data: Path, *, engine: str | None, tide: bool,
                     out: Path | None, convention: str | None = None) -> None:
    """`compress evaluate MODEL --data ROOT`: MODEL is a run folder, ticket/checkpoint or ONNX.

    `convention` None takes the recipe's evaluate.convention."""

    is_onnx = model.suffix == ".onnx"
    engine = engine or running(FULL_GRAPH if is_onnx else TICKET, EVALUATE)
    run = run_of(model)
    loaded = load_model(run.root if is_onnx else model)
    task = ARCH_TASK[loaded.recipe.model.arch]
    kind = loaded.recipe.data.dataset
    split = "val" if kind == "synthetic" else loaded.recipe.data.val_split
    dataset = build_dataset(kind, data, split, task, train=False)
    loader = make_loader(dataset, 2, shuffle=False, seed=0, num_workers=0)
    onnx_path = model if is_onnx else run.export / "model.onnx"
    # the run's own eval/<engine>/ is the run's evaluation (summary.json points at it): a later
    # evaluation, maybe on other data, goes beside it, never over it
    out_dir = out or run.root / "evaluate" / f"{engine}-{Path(data).resolve().name}"
    gt_path = ground_truth_path(kind, dataset, data, split, out_dir)
    scorer = Scorer(gt_path, dict(dataset.label_to_cat_id), task,
                    convention or loaded.recipe.evaluate.convention, voc=kind == "voc")
    metrics = evaluate_engine(engine, onnx_path, loaded, loader, scorer, out_dir, progress=True)
    failed = warn_if_failed(engine, metrics, {})
    if tide and not failed:
        analyses(run, out_dir, gt_path, task, tide=True, keypoint_errors=True)
    print(json.dumps(metrics, indent=2))
    print(f"evaluate: wrote {out_dir}", file=sys.stderr)
    if failed:
        raise CheckFailed(f"evaluate {engine} failed: "
                          f"{(metrics.get('parity_vs_onnxruntime') or metrics).get('reason')} "
                          f"(see {out_dir / 'parity.json'})")
