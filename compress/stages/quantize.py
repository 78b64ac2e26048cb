"""The quantization stage: the ticket -> the INT8 ticket (QAT, zeros held) -> its export (QDQ full
graph for ONNX Runtime, DeepSparse deployment with integer heavy parts) -> its evaluation on
torch (fake-quant), ONNX Runtime and DeepSparse, beside the fp32 ticket's. Everything lands in
`quantize/`; the record in summary.json `quantize`.
"""
from __future__ import annotations

import copy
import json
import logging
from typing import Any

import torch

from compress.core.atomic import write_json
from compress.quantize.phase import rebuild, train_qat
from compress.quantize.qat import quantized_params
from compress.recipe.schema import Recipe
from compress.run.checks import tag
from compress.core.folders import RunFolder
from compress.run.setup import iterations_per_epoch
from compress.run.torch_eval import evaluate_torch
from compress.stages.base import StageContext
from compress.stages.evaluate import evaluate_deployment, evaluate_engine, warn_if_failed
from compress.stages.export import parity_images, val_images
from compress.evaluate.runtimes.parity import summarize_int8
from compress.evaluate.runtimes.pipeline import DeployedDetector, deployment_intact, predict_onnx
from compress.export.int8_export import export_int8

log = logging.getLogger(__name__)

MAP_BUDGET = 0.02  # INT8 ticket vs fp32 ticket, bbox / segm mAP on torch: a larger loss is warned
ENGINE_MATCH = 0.005  # DeepSparse INT8 vs ONNX Runtime INT8, bbox mAP


def _metrics(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k.endswith("_mAP") or k in ("status", "reason")}


def _compare(record: dict[str, Any], fp32: dict[str, Any]) -> None:
    """Deltas against the fp32 ticket and between engines, in place; warnings where they exceed
    the budgets."""
    torch8 = record["eval"].get("torch", {})
    plain = record.get("eval_without_quantization", {})
    for key in ("bbox_mAP", "segm_mAP", "keypoints_mAP"):
        if key in torch8 and key in plain:
            record[f"quantization_cost_{key}"] = plain[key] - torch8[key]
        if key in torch8 and key in fp32:
            delta = torch8[key] - fp32[key]
            record[f"delta_{key}"] = delta
            if delta < -MAP_BUDGET:
                log.warning("quantize: the INT8 ticket loses %.4f %s against the fp32 ticket "
                            "(%.4f -> %.4f; budget %.2f)", -delta, key, fp32[key], torch8[key],
                            MAP_BUDGET, extra=tag("int8_accuracy"))
    ort, ds = record["eval"].get("onnxruntime", {}), record["eval"].get("deepsparse", {})
    if "bbox_mAP" in ort and "bbox_mAP" in ds:
        gap = ds["bbox_mAP"] - ort["bbox_mAP"]
        record["deepsparse_minus_onnxruntime_bbox_mAP"] = gap
        if abs(gap) > ENGINE_MATCH:
            log.warning("quantize: DeepSparse INT8 bbox mAP %.4f differs from ONNX Runtime's %.4f "
                        "by more than %.3f", ds["bbox_mAP"], ort["bbox_mAP"], ENGINE_MATCH,
                        extra=tag("int8_engines"))


def _say_export(export: dict[str, Any], verify: Any) -> None:
    """The INT8 export's checks on the console: a warning for each that failed."""
    if not export["zeros_preserved"]:
        log.warning("quantize: the INT8 export lost zeros (see %s)", verify, extra=tag("int8_zeros"))
    conversion = export["deploy"].get("int8_conversion") or {}
    if conversion.get("status") == "failed":
        log.warning("quantize: the integer parts differ from the QDQ graph on confident "
                    "detections (%s)", conversion.get("reason"), extra=tag("parity"))
    elif conversion:
        log.info("quantize: integer parts vs the QDQ graph on ONNX Runtime: %s", conversion.get(
            "reason") or f"{conversion['agreed']} of {conversion['confident_detections']} "
                         "confident detections agree")
    if export["parity_status"] == "unchecked":
        log.info("quantize: INT8 parity unchecked: %s", export["parity_reason"])
    elif not export["parity_ok"]:
        log.warning("quantize: INT8 ONNX Runtime vs fake-quant torch parity failed (see %s)",
                    verify, extra=tag("parity"))


class QuantizeStage:
    """QAT after the last round, INT8 export and deployment, INT8 evaluation; summary `quantize`."""
    name = "quantize"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.quantize.enabled

    def done(self, run: RunFolder) -> bool:
        record = run.read_summary().get("quantize")
        if not record or not (run.quantize / "model.pt").is_file():
            return False
        return "export" not in record or deployment_intact(run.quantize / "export" / "deploy")

    def run(self, ctx: StageContext) -> dict[str, Any]:
        recipe, run, data, loaded = ctx.recipe, ctx.run, ctx.data, ctx.loaded
        out = run.quantize
        ipe = iterations_per_epoch(len(data.train), recipe.train.batch_size)
        if (out / "model.pt").is_file() and (out / "train.json").is_file():
            training = json.loads((out / "train.json").read_text())
        else:
            training = train_qat(loaded.model, loaded.mask, recipe, ctx.loaders, ipe, out,
                                 ctx.progress)
            write_json(out / "train.json", training)
        if training["pruned_nonzero_after_training"]:
            log.warning("quantize: %d pruned weights became nonzero during QAT",
                        training["pruned_nonzero_after_training"], extra=tag("int8_zeros"))
        model, qmask = rebuild(loaded.model, loaded.mask, out)
        record: dict[str, Any] = {**training, "eval": {}}
        engines = list(recipe.evaluate.engines) if recipe.evaluate.enabled else ["torch"]
        if recipe.export.enabled:
            size = recipe.image_size
            record["export"] = export_int8(model, qmask, quantized_params(model),
                                           out / "export", image_size=size,
                                           opset=recipe.export.opset, images=parity_images(size),
                                           deploy_images=val_images(ctx.loaders))
            _say_export(record["export"], out / "export" / "verify.json")
        else:
            engines = ["torch"]
        if "onnxruntime" in engines:
            engines.insert(engines.index("onnxruntime") + 1, "onnxruntime_qdq")
        for engine in engines:
            result = self._evaluate(engine, model, ctx)
            record["eval"][engine] = _metrics(result)
            warn_if_failed(f"{engine} (INT8)", result, record["eval"])
        record["eval_without_quantization"] = _metrics(self._without_quantization(model, ctx))
        _compare(record, run.read_summary().get("eval", {}).get("torch") or {})
        return record

    def _without_quantization(self, model: torch.nn.Module, ctx: StageContext) -> dict[str, Any]:
        """The same trained weights with fake quantization off: what quantization alone costs
        (the phase also trains, so against the fp32 ticket a change mixes both)."""
        data, out_dir = ctx.data, ctx.run.quantize / "eval" / "torch_without_quantization"
        out_dir.mkdir(parents=True, exist_ok=True)
        plain = copy.deepcopy(model).apply(torch.ao.quantization.disable_fake_quant)
        return evaluate_torch(plain, ctx.loaders["val"], torch.device("cpu"), data.scorer, out_dir,
                              ctx.progress)

    def _evaluate(self, engine: str, model: torch.nn.Module, ctx: StageContext) -> dict[str, Any]:
        scorer, out = ctx.data.scorer, ctx.run.quantize
        out_dir = out / "eval" / engine
        if engine == "deepsparse":
            return evaluate_deployment(out / "export", ctx.loaders["val"], scorer, out_dir,
                                       judge=summarize_int8)
        out_dir.mkdir(parents=True, exist_ok=True)
        if engine == "torch":
            return evaluate_torch(model, ctx.loaders["val"], torch.device("cpu"), scorer, out_dir,
                                  ctx.progress)
        if engine == "onnxruntime_qdq":  # the QDQ full graph: what ONNX Runtime alone would run
            return evaluate_engine("onnxruntime", out / "export" / "model.onnx", None,
                                   ctx.loaders["val"], scorer, out_dir, ctx.progress)
        # onnxruntime: the INT8 deployment itself (the integer parts DeepSparse runs), on ORT
        with DeployedDetector(out / "export", engine="onnxruntime") as detector:
            predictions = predict_onnx(detector, ctx.loaders["val"])
        return scorer.score_predictions(predictions, out_dir)
