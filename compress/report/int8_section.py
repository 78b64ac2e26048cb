"""The report's INT8 section: the quantized ticket (summary.json `quantize`) against the fp32
ticket, per engine (torch fake-quant, ONNX Runtime QDQ, the DeepSparse deployment); its export
checks and sizes; its deployed latency beside the fp32 ticket's (bench rows `model: INT8 ticket`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.report import plots
from compress.report.page import Missing, Section, fmt
from compress.report.run_data import RunData, figure, read_json, table

BUDGET = 0.02  # compress.stages.quantize.MAP_BUDGET
KEYS = ("bbox_mAP", "segm_mAP", "keypoints_mAP")


def sec_int8(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    quantized = [r for r in runs if r.summary.get("quantize")]
    if not quantized:
        raise Missing("no run has a quantization phase (quantize.enabled)")
    rows, bars = [], {}
    for run in quantized:
        record, fp32 = run.summary["quantize"], run.summary.get("eval") or {}
        for engine, int8 in (record.get("eval") or {}).items():
            for key in KEYS:
                if key not in int8:
                    continue
                base = (fp32.get(engine.removesuffix("_qdq")) or {}).get(key)
                status = int8.get("status", "ok")
                rows.append([run.label, engine, key, fmt(base), fmt(int8[key]),
                             fmt(int8[key] - base) if isinstance(base, float) else "-",
                             "" if status == "ok" else "parity unchecked (nothing confident)"
                             if status == "unchecked" else f"FAILED: {int8.get('reason') or 'parity'}"])
                if key == "bbox_mAP":
                    bars.setdefault(run.label, {}).setdefault("fp32 ticket", {})[engine] = base or 0.0
                    bars[run.label].setdefault("INT8 ticket", {})[engine] = int8[key]
        section.text.append(_verdict(run, record))
        section.text += _export_lines(run, record)
        section.text += _latency_lines(run)
    if bars:
        path = plots.plot_grouped_bars(bars, plot_dir / "int8_vs_fp32.png", "bbox mAP",
                                       "INT8 ticket vs fp32 ticket")
        figure(section, path, "bbox mAP of the fp32 ticket and the INT8 ticket per engine "
                              "(torch: fake-quantized; onnxruntime: QDQ graph; deepsparse: the "
                              "deployment with integer parts)")
    table(section, ["run", "engine", "metric", "fp32 ticket", "INT8 ticket", "INT8 - fp32", "note"],
          rows, "INT8 ticket vs fp32 ticket (validation set)")


def _verdict(run: RunData, record: dict[str, Any]) -> str:
    delta = record.get("delta_bbox_mAP")
    gap = record.get("deepsparse_minus_onnxruntime_bbox_mAP")
    head = (f"{run.label}: {record.get('iterations')} QAT iterations, "
            f"{record.get('quantized_layers')} layers quantized, "
            f"{record.get('pruned_nonzero_after_training', '?')} pruned weights nonzero after QAT")
    if not isinstance(delta, float):
        return head + "; no fp32 ticket score to compare with"
    kept = "lost no more than" if delta >= -BUDGET else "LOST MORE than"
    line = (f"{head}. The INT8 ticket {kept} {BUDGET} bbox mAP against the fp32 ticket on torch "
            f"({delta:+.4f}; QAT trains on, so a gain is training, not quantization)")
    cost = record.get("quantization_cost_bbox_mAP")
    if isinstance(cost, float):
        line += (f"; quantization alone costs {cost:+.4f} bbox mAP (the same QAT weights with "
                 "fake quantization off)")
    if isinstance(gap, float):
        line += f"; DeepSparse INT8 - ONNX Runtime INT8: {gap:+.4f}"
    return line


def _export_lines(run: RunData, record: dict[str, Any]) -> list[str]:
    export = record.get("export")
    if not export:
        return [f"{run.label}: INT8 not exported (export.enabled false)"]
    deploy = export.get("deploy") or {}
    fp32_bytes = (run.summary.get("export") or {}).get("onnx_bytes")
    sizes = f"{export.get('deploy_heavy_bytes')} B of INT8 DeepSparse parts"
    if export.get("compact_int8_bytes"):
        sizes += f", {export['compact_int8_bytes']} B as compact archives"
    compact = (run.summary.get("export") or {}).get("compact_bytes")
    if fp32_bytes:
        sizes += f" (the fp32 full graph: {fp32_bytes} B, its compact archive {compact} B)"
    line = (f"INT8 export: zeros preserved {export.get('zeros_preserved')}, torch vs ONNX Runtime "
            f"parity {_parity(export)}, "
            f"deployment {deploy.get('status')}; {sizes}; "
            f"{export.get('integer_op_fraction', 0):.0%} of the parts' convs / matmuls integer")
    return [line]


def _latency_lines(run: RunData) -> list[str]:
    path = run.root / "bench" / "bench.json"
    rows = read_json(path) if path.is_file() else run.summary.get("bench") or []
    p50 = {(r.get("model"), r.get("engine")): r.get("p50_ms") for r in rows
           if r.get("graph") == "pipeline" and r.get("status") == "ok"}
    mine = p50.get(("INT8 ticket", "deepsparse"))
    if not mine:
        return []
    others = [(("ticket", "onnxruntime"), "ORT fp32 full graph"),
              (("INT8 ticket", "onnxruntime"), "ORT INT8 (QDQ) full graph"),
              (("ticket", "deepsparse"), "the fp32 ticket on DeepSparse")]
    ratios = [f"{label} {p50[key] / mine:.2f}x" for key, label in others if p50.get(key)]
    return [f"INT8 ticket deployed on DeepSparse: {mine:.1f} ms per image; speed-up over "
            + (", ".join(ratios) or "nothing else timed")
            + " (this run's bench; see the latency section for the machine and its load)"]


def _parity(export: dict[str, Any]) -> str:
    status = export.get("parity_status") or ("ok" if export.get("parity_ok") else "failed")
    return status if status == "ok" else f"{status.upper() if status == 'failed' else status}: " \
        f"{export.get('parity_reason')}"
