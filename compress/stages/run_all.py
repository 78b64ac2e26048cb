"""The stages after the lottery: export, evaluate, bench, report. Each writes its own folder and
records itself in summary.json; a finished stage is skipped on --resume."""
from __future__ import annotations

import logging
from typing import Any

from compress.recipe.schema import Recipe
from compress.run.folder import RunFolder
from compress.run.loaded import load_model
from compress.stages.bench import bench_stage, macs_stage
from compress.stages.export import export_stage
from compress.stages.evaluate import analyses, evaluate_engine
from compress.report.build import report_command

log = logging.getLogger(__name__)


def finish_run(recipe: Recipe, run: RunFolder, data: Any, loaders: dict[str, Any],
               progress: bool) -> None:
    loaded = load_model(run.root)
    summary = run.read_summary()
    if recipe.export.enabled:
        export_stage(loaded, progress)
    if recipe.evaluate.enabled and "eval" not in summary:
        run.update_summary(eval=_evaluate_all(recipe, run, loaded, data, loaders, progress))
    if recipe.bench.enabled and "macs" not in summary:
        run.update_summary(macs=macs_stage(loaded))
    if recipe.bench.enabled and recipe.export.enabled and "bench" not in summary:
        run.update_summary(bench=bench_stage(loaded))
    _report(run)


def _evaluate_all(recipe: Recipe, run: RunFolder, loaded: Any, data: Any, loaders: dict[str, Any],
                  progress: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for engine in recipe.evaluate.engines:
        if engine != "torch" and not recipe.export.enabled:
            log.warning("evaluate: %s needs the export stage; skipped", engine)
            continue
        out_dir = run.eval_dir(engine)
        results[engine] = evaluate_engine(engine, run.export / "model.onnx", loaded, loaders["val"],
                                          data.gt_path, data.label_to_cat_id, data.task, out_dir,
                                          progress)
        if engine != "deepsparse":
            results[engine].update(analyses(run, out_dir, data.gt_path, data.task,
                                            recipe.evaluate.tide, recipe.evaluate.keypoint_errors))
    if "torch" in results and "onnxruntime" in results:
        results["onnxruntime_minus_torch_bbox_mAP"] = (results["onnxruntime"]["bbox_mAP"]
                                                       - results["torch"]["bbox_mAP"])
    return results


def _report(run: RunFolder) -> None:
    report_command([run.root], out=None)
