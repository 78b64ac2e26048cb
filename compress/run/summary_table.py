"""The run's summary table, printed at the end of `compress run`."""
from __future__ import annotations

import statistics
from typing import Any

METRIC_COLUMNS = ("bbox_mAP", "bbox_AP50", "segm_mAP", "kp_mAP", "voc07_mAP50", "val_loss")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_summary(summary: dict[str, Any]) -> str:
    rounds = summary.get("rounds") or []
    columns = [c for c in METRIC_COLUMNS if any(c in r.get("metrics", {}) for r in rounds)]
    header = ["round", "sparsity", "prunable"] + columns
    rows = [[str(r["round"]), f"{r['sparsity']:.4f}", f"{r['prunable_sparsity']:.4f}"]
            + [_cell(r.get("metrics", {}).get(c)) for c in columns] for r in rounds]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = [f"{summary.get('name', 'run')} ({summary.get('arch', '?')} / "
             f"{summary.get('backbone', '?')}, {summary.get('method', '?')})",
             "  ".join(h.rjust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines += _control_lines(rounds, columns[0] if columns else None)
    export = summary.get("export")
    if export:
        lines.append(f"export: onnx {export.get('onnx_bytes')} B, compact {export.get('compact_bytes')} B, "
                     f"zeros preserved {export.get('zeros_preserved')}, max |diff| {export.get('max_abs_diff')}")
    lines += quantize_lines(summary.get("quantize"), (summary.get("eval") or {}).get("torch") or {})
    for row in summary.get("bench") or []:
        if row.get("p50_ms") is not None:
            model = f" ({row['model']})" if row.get("graph") == "pipeline" and row.get("model") else ""
            lines.append(f"bench {row.get('graph', '')}{model} {row['engine']} batch {row['batch']}: "
                         f"p50 {row['p50_ms']:.1f} ms, "
                         f"{row.get('items_per_s', 0):.2f} items/s")
    return "\n".join(lines)


def _control_lines(rounds: list[dict[str, Any]], metric: str | None) -> list[str]:
    """Per round that trained them: each control's `metric` beside the ticket's, and the seed
    spread (the round's own seed first)."""
    if metric is None or metric == "val_loss":
        return []
    lines = []
    for r in rounds:
        mine = r.get("metrics", {}).get(metric)
        controls = r.get("controls") or {}
        if controls:
            lines.append(f"round {r['round']} controls ({metric}): ticket {_cell(mine)}, " + ", ".join(
                f"{name} {_cell(c.get(metric))}" for name, c in controls.items()))
        values = [v for v in [mine, *((rep.get(metric) for rep in (r.get("replicates") or {}).values()))]
                  if isinstance(v, (int, float))]
        if r.get("replicates") and len(values) >= 2:
            lines.append(f"round {r['round']} over {len(values)} seeds ({metric}): "
                         f"{statistics.fmean(values):.4f} +- {statistics.stdev(values):.4f} (sd; "
                         + ", ".join(f"{v:.4f}" for v in values) + ")")
    return lines


def quantize_lines(record: dict[str, Any] | None, fp32: dict[str, Any]) -> list[str]:
    """The INT8 ticket in two lines: its mAP per engine beside the fp32 ticket's, and its export."""
    if not record:
        return []
    cells = []
    for engine, result in (record.get("eval") or {}).items():
        value = result.get("bbox_mAP")
        status = result.get("status", "ok")
        failed = {"ok": "", "unchecked": " (parity unchecked)"}.get(status, " FAILED")
        cells.append(f"{engine} {_cell(value)}{failed}")
    base = fp32.get("bbox_mAP")
    delta = record.get("delta_bbox_mAP")
    cost = record.get("quantization_cost_bbox_mAP")
    lines = [f"quantize: INT8 ticket after {record.get('iterations')} QAT iterations, bbox mAP "
             + ", ".join(cells) + (f" (fp32 ticket {base:.4f}, {delta:+.4f} on torch)"
                                   if isinstance(base, float) and isinstance(delta, float) else "")
             + (f"; quantization alone costs {cost:+.4f} (the same weights without fake-quant)"
                if isinstance(cost, float) else "")]
    export = record.get("export")
    if export:
        deploy = export.get("deploy") or {}
        conversion = deploy.get("int8_conversion") or {}
        agree = (f", integer parts vs QDQ graph: {conversion['agreed']} of "
                 f"{conversion['confident_detections']} confident detections agree"
                 if conversion.get("confident_detections") else "")
        parity = export.get("parity_status") or ("ok" if export.get("parity_ok") else "failed")
        lines.append(f"quantize export: zeros preserved {export.get('zeros_preserved')}, torch "
                     f"parity {parity if parity != 'failed' else 'FAILED'}, deployment "
                     f"{deploy.get('status')} ({export.get('deploy_heavy_bytes')} B of INT8 parts, "
                     f"{export.get('compact_int8_bytes')} B as compact archives, "
                     f"{export.get('integer_op_fraction', 0):.0%} of their convs / matmuls "
                     f"integer{agree})")
    return lines
