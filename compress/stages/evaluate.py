"""The evaluation stage: the ticket on torch, the deployed ONNX on ONNX Runtime, DeepSparse vs ORT
on the backbone graph; TIDE, keypoint errors and dense-vs-ticket AP deltas; `compress evaluate`."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.core.atomic import write_json
from compress.core.errors import UserError
from compress.run.torch_eval import coco_results, evaluate_torch, score_results
from compress.recipe.schema import Recipe
from compress.run.folder import RunFolder
from compress.stages.base import StageContext
from compress.run.setup import TASK_IOU_TYPES
from evaluate.runtimes.onnx_predict import OnnxDetector, predict_onnx
from evaluate.runtimes.deepsparse import deepsparse_outputs
from evaluate.runtimes.ort import EngineUnavailable, ort_session
from evaluate.analysis.ap_deltas import ap_deltas, plot_ap_deltas
from evaluate.analysis.tide import compare_tide, run_tide
from evaluate.analysis.keypoint_errors import analyze_keypoint_errors
from compress.data.loaders import build_dataset, make_loader
from compress.run.loaded import load_model, run_of
from compress.models.build import ARCH_TASK
from compress.run.setup import ground_truth_path

log = logging.getLogger(__name__)


def evaluate_engine(engine: str, model_path: Path, loaded: Any, loader: Any, gt_path: Path,
                    label_to_cat_id: dict[int, int], task: str, out_dir: Path,
                    progress: bool, convention: str = "coco", voc: bool = False) -> dict[str, Any]:
    """COCO metrics (with `voc` also the Pascal VOC metric) of one engine; writes results.json +
    metrics.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if engine == "torch":
        return evaluate_torch(loaded.model, loader, torch.device("cpu"), gt_path, label_to_cat_id,
                              task, out_dir, progress, convention=convention, voc=voc)
    if engine == "onnxruntime":
        predictions = predict_onnx(OnnxDetector(model_path), loader)
        return score_results(gt_path, coco_results(predictions, label_to_cat_id, task), task,
                             out_dir, convention, voc)
    if engine == "deepsparse":
        return deepsparse_backbone_parity(model_path.parent / "backbone.onnx", loader, out_dir)
    raise UserError(f"engine '{engine}' is not one of torch, onnxruntime, deepsparse", key="--engine")


def deepsparse_backbone_parity(backbone_onnx: Path, loader: Any, out_dir: Path) -> dict[str, Any]:
    """DeepSparse runs the backbone+FPN graph (the full R-CNN graph crashes it): its feature maps
    against ONNX Runtime's on validation images."""

    session = ort_session(backbone_onnx)
    shape = session.get_inputs()[0].shape
    images, _ = next(iter(loader))
    batch = torch.stack([torch.nn.functional.interpolate(i[None], size=tuple(shape[2:]))[0]
                         for i in images[:1]]).numpy().astype(np.float32)
    reference = session.run(None, {session.get_inputs()[0].name: batch})
    try:
        outputs = deepsparse_outputs(backbone_onnx, [batch])
    except EngineUnavailable as err:
        result = {"engine": "deepsparse", "status": "failed", "reason": str(err)}
    else:
        diffs = [float(np.abs(a - b).max()) for a, b in zip(outputs, reference)]
        result = {"engine": "deepsparse", "status": "ok", "graph": "backbone",
                  "max_abs_diff_vs_onnxruntime": max(diffs), "per_output": diffs}
    write_json(out_dir / "parity.json", result)
    return result


def analyses(run: RunFolder, engine_dir: Path, gt_path: Path, task: str, tide: bool,
             keypoint_errors: bool) -> dict[str, Any]:
    """TIDE (boxes, masks), keypoint errors and dense-vs-ticket AP deltas for one engine's results."""

    results_path = engine_dir / "results.json"
    dense_dir = run.round_dir(0) / "eval"
    has_dense = (dense_dir / "results.json").is_file() and run.finished_rounds()[-1:] != [0]
    out: dict[str, Any] = {}
    for iou_type in TASK_IOU_TYPES[task]:
        if tide and iou_type in ("bbox", "segm"):
            out[f"tide_{iou_type}"] = run_tide(gt_path, results_path, iou_type, engine_dir, "ticket")
            if has_dense:
                compare_tide(dense_dir / "results.json", results_path, gt_path, iou_type, engine_dir)
        if keypoint_errors and iou_type == "keypoints":
            results = json.loads(results_path.read_text())
            out["keypoint_errors"] = analyze_keypoint_errors(gt_path, results, engine_dir)["counts"]
    if has_dense:
        dense = json.loads((dense_dir / "metrics.json").read_text())
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
            if engine != "torch" and not recipe.export.enabled:
                log.warning("evaluate: %s needs the export stage; skipped", engine)
                continue
            out_dir = run.eval_dir(engine)
            results[engine] = evaluate_engine(engine, run.export / "model.onnx", ctx.loaded,
                                              ctx.loaders["val"], data.gt_path, data.label_to_cat_id,
                                              data.task, out_dir, ctx.progress,
                                              recipe.evaluate.convention,
                                              voc=recipe.data.dataset == "voc")
            if engine != "deepsparse":
                results[engine].update(analyses(run, out_dir, data.gt_path, data.task,
                                                recipe.evaluate.tide, recipe.evaluate.keypoint_errors))
        if "torch" in results and "onnxruntime" in results:
            results["onnxruntime_minus_torch_bbox_mAP"] = (results["onnxruntime"]["bbox_mAP"]
                                                           - results["torch"]["bbox_mAP"])
        return results


def evaluate_command(model: Path, data: Path, *, engine: str | None, tide: bool,
                     out: Path | None, convention: str | None = None) -> None:
    """`compress evaluate MODEL --data ROOT`: MODEL is a run folder, ticket/checkpoint or ONNX.

    `convention` None takes the recipe's evaluate.convention."""

    is_onnx = model.suffix == ".onnx"
    engine = engine or ("onnxruntime" if is_onnx else "torch")
    run = run_of(model)
    loaded = load_model(run.root if is_onnx else model)
    task = ARCH_TASK[loaded.recipe.model.arch]
    kind = loaded.recipe.data.dataset
    split = "val" if kind == "synthetic" else loaded.recipe.data.val_split
    dataset = build_dataset(kind, data, split, task, train=False)
    loader = make_loader(dataset, 2, shuffle=False, seed=0, num_workers=0)
    onnx_path = model if is_onnx else run.export / "model.onnx"
    out_dir = out or run.eval_dir(engine)
    gt_path = ground_truth_path(kind, dataset, data, split, out_dir)
    metrics = evaluate_engine(engine, onnx_path, loaded, loader, gt_path,
                              dict(dataset.label_to_cat_id), task, out_dir, progress=True,
                              convention=convention or loaded.recipe.evaluate.convention,
                              voc=kind == "voc")
    if tide and engine != "deepsparse":
        analyses(run, out_dir, gt_path, task, tide=True, keypoint_errors=True)
    print(json.dumps(metrics, indent=2))
