"""The sections of `compress report` (see compress/report/build.py): each takes the runs and the
plot folder and fills one Section; missing inputs raise Missing ("not run: ...")."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.report.run_data import (RunData, atomic_plot, figure, is_dense, per_run, read_json,
                                    size_macs_series, slug, table)
from compress.report import plots as plots
from compress.report.page import Missing, Section, fmt
from compress.evaluate.analysis.convergence import (convergence_verdict, load_metrics_jsonl, plot_convergence,
                                          val_loss_series)
from compress.report.gallery import gallery_image, run_label_info
from compress.evaluate.analysis.keypoint_errors import analyze_keypoint_errors
from compress.evaluate.analysis.ap_deltas import ap_deltas, plot_ap_deltas
from compress.report.runtime import sec_runtime
from compress.report.controls_section import sec_controls
from compress.report.transfer_section import sec_transfer
from compress.report.int8_section import sec_int8
from compress.run.checks import parity_note, run_warnings
from compress.evaluate.runtimes.pipeline_bench import describe_speedups
from compress.evaluate.runtimes.protocol import load_note

ROUND_CHECKS = ("shortfall", "partial_transfer", "loaded_profile")  # said under the rounds table
METRICS = ("bbox_mAP", "bbox_AP50", "segm_mAP", "kp_mAP", "voc07_mAP50")  # VOC: Pascal VOC07 AP50


def _drop_empty_columns(header: list[str], rows: list[list[str]], keep: int) -> tuple[list[str], list[list[str]]]:
    """Drop the columns after the first `keep` that hold only '-' (e.g. kp mAP of a mask run)."""
    cols = [i for i in range(len(header)) if i < keep or any(row[i] != "-" for row in rows)]
    return [header[i] for i in cols], [[row[i] for i in cols] for row in rows]


def sec_summary(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    header = ["run", "round", "model", "sparsity", "prunable sparsity", *METRICS, "val loss"]
    rows = []
    for run in runs:
        for r in run.rounds:
            m = r.get("metrics", {})
            kind = ("dense" if is_dense(r) else
                    "ticket" if r["round"] == run.last_round else "pruned")
            rows.append([run.label, str(r["round"]), kind, fmt(r.get("sparsity")),
                         fmt(r.get("prunable_sparsity")), *(fmt(m.get(k)) for k in METRICS),
                         fmt(m.get("val_loss"))])
    table(section, *_drop_empty_columns(header, rows, 5), "Every round (torch, validation set)")
    for run in runs:
        section.text += [f"Warning ({run.label}, {w['check']}): {w['message']}"
                         for w in run_warnings(run.summary) if w["check"] in ROUND_CHECKS]
    rows = [row for run in runs for row in _engine_rows(run)]
    if rows:
        table(section, *_drop_empty_columns(["run", "engine", *METRICS, "note"], rows, 2),
              "The ticket on each engine (eval/<engine>)")
    else:
        section.missing.append("not run: evaluation of the exported ticket (no eval/<engine>/metrics.json)")


def _engine_rows(run: RunData) -> list[list[str]]:
    rows = []
    for engine_dir in run.eval_dirs():
        if (engine_dir / "metrics.json").is_file():
            stats = read_json(engine_dir / "metrics.json")
            flat = {f"{p}_{k}": stats.get(t, {}).get(k) for t, p in
                    (("bbox", "bbox"), ("segm", "segm"), ("keypoints", "kp")) for k in ("AP", "AP50")}
            values = [flat["bbox_AP"], flat["bbox_AP50"], flat["segm_AP"], flat["kp_AP"],
                      stats.get("voc", {}).get("voc07_mAP50")]
            parity = engine_dir / "parity.json"
            note = parity_note(read_json(parity)) if parity.is_file() else ""
            rows.append([run.label, engine_dir.name, *(fmt(v) for v in values), note])
        elif (engine_dir / "parity.json").is_file():
            parity = read_json(engine_dir / "parity.json")
            note = (f"backbone graph: max |diff| vs ORT {fmt(parity.get('max_abs_diff_vs_onnxruntime'), 7)}"
                    if parity.get("status") == "ok" else f"failed: {parity.get('reason')}")
            rows.append([run.label, engine_dir.name, *["-"] * len(METRICS), note])
    return rows


def sec_sparsity_map(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    metrics = [k for k in ("bbox_mAP", "segm_mAP", "kp_mAP")
               if any(r.get("metrics", {}).get(k) is not None for run in runs for r in run.rounds)]
    if not metrics:
        raise Missing("no round recorded bbox_mAP / segm_mAP / kp_mAP")
    series = {run.label: [(r.get("sparsity", 0.0), r.get("metrics", {})) for r in run.rounds]
              for run in runs}
    dense = {run.label: r.get("metrics", {}) for run in runs for r in run.rounds[:1] if is_dense(r)}
    path = plots.plot_sparsity_vs_map(series, metrics, plot_dir / "sparsity_vs_map.png", dense)
    figure(section, path, "mAP per round against sparsity; dashed: the dense model (round 0)")
    for run in runs:
        if run.label not in dense:
            section.text.append(f"{run.label}: no dense round (it starts sparse), so no dense line.")


def sec_convergence(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        path = run.root / "metrics.jsonl"
        if not path.is_file():
            section.missing.append(f"not run ({run.label}): {path} is missing")
            continue
        found = val_loss_series([r for r in load_metrics_jsonl(path)  # the rounds' own trainings
                                 if "control" not in r and "replicate_seed" not in r])
        if not found:
            section.missing.append(f"not run ({run.label}): metrics.jsonl holds no val_loss per epoch")
        for label, points in found.items():
            series[label if len(runs) == 1 else f"{run.label}: {label}"] = points
        labels = list(found)
        if len(labels) >= 2 and (line := convergence_verdict(found[labels[0]], found[labels[1]],
                                                           (labels[0], labels[1]))):
            section.text.append(f"{run.label}: {line}.")
    if series:
        out = atomic_plot(lambda p: plot_convergence(series, p), plot_dir / "convergence.png")
        figure(section, out, "Validation loss per epoch: the dense training and every pruned round")
        rows = [[label, str(len(points)), fmt(points[-1][1])] for label, points in series.items()]
        table(section, ["training", "epochs with val loss", "last val loss"], rows)


def sec_tide(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    def one(run: RunData) -> None:
        for engine_dir in run.eval_dirs():
            both, alone = engine_dir / "tide_compare.json", engine_dir / "tide.json"
            if both.is_file() or alone.is_file():
                break
        else:
            raise Missing("no eval/<engine>/tide.json (evaluate.tide off, or evaluation not run)")
        data = read_json(both) if both.is_file() else {t: {"ticket": e} for t, e in read_json(alone).items()}
        if not both.is_file():
            section.text.append(f"{run.label}: TIDE of the dense model is not available; the ticket alone.")
        groups = {iou: plots.tide_bar_groups(entries) for iou, entries in data.items()}
        path = plots.plot_grouped_bars(groups, plot_dir / f"tide_{slug(run.label)}.png",
                                       "dAP (AP points)", "TIDE")
        figure(section, path, f"{run.label}: TIDE errors (dAP at IoU 0.5), {engine_dir.name} results")
        rows = [[iou, name, fmt(entry.get("AP50"), 2), *(fmt(v, 2) for v in values.values())]
                for iou, entries in data.items()
                for (name, entry), values in zip(entries.items(), groups[iou].values())]
        table(section, ["iou", "model", "AP50", *plots.TIDE_ERRORS], rows, f"{run.label}: TIDE dAP")
        section.text += [f"{run.label} ({iou}): {line}" for iou, bars in groups.items()
                         if (line := tide_verdict(bars))]
    per_run(section, runs, one)


def tide_verdict(bars: dict[str, dict[str, float]]) -> str | None:
    """Appendix B's claim in one line: do dense and ticket lose their AP to the same main errors
    (the same two largest of Cls, Loc, Both, Dupe, Bkg, Miss)?"""
    if not {"dense", "ticket"} <= set(bars):
        return None
    main = plots.TIDE_ERRORS[:6]
    top = {name: sorted(main, key=lambda k: -bars[name].get(k, 0.0))[:2] for name in ("dense", "ticket")}
    same = set(top["dense"]) == set(top["ticket"])
    return (f"largest errors: dense {', '.join(top['dense'])}; ticket {', '.join(top['ticket'])}: "
            + ("the same kinds of errors, as the paper finds." if same else
               "not the same two, unlike the paper."))


def sec_keypoints(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    def one(run: RunData) -> None:
        if run.task != "keypoints":
            raise Missing(f"task is {run.task or 'unknown'}, not keypoints")
        found = [d / "keypoint_errors.json" for d in run.eval_dirs() if (d / "keypoint_errors.json").is_file()]
        if not found:
            raise Missing("no eval/<engine>/keypoint_errors.json (evaluate.keypoint_errors off?)")
        reports = {**_dense_keypoint_report(run), "ticket": read_json(found[0])}
        groups = {"share of keypoints": {n: r["fractions"] for n, r in reports.items()},
                  "AP gain when fixed": {n: r["ap_gain"] for n, r in reports.items()}}
        path = plots.plot_grouped_bars(groups, plot_dir / f"keypoint_errors_{slug(run.label)}.png",
                                       "", "keypoints")
        figure(section, path, f"{run.label}: keypoint errors (Ronchi & Perona) and the AP gained by fixing each")
        kinds = list(reports["ticket"]["counts"])
        rows = [[name, *(str(r["counts"][k]) for k in kinds), str(r["false_positives"]),
                 str(r["false_negatives"]), fmt(r.get("ap"))] for name, r in reports.items()]
        table(section, ["model", *kinds, "background FP", "FN", "kp AP"], rows, f"{run.label}: counts")
    per_run(section, runs, one)


def _dense_keypoint_report(run: RunData) -> dict[str, Any]:
    """Keypoint errors of round 0's predictions (computed here; cheap), when there is a ticket."""

    results = run.folder.round(0).eval_results
    gt_path = run_label_info(run.root).gt_path
    if run.last_round == 0 or not results.is_file() or gt_path is None:
        return {}
    return {"dense": analyze_keypoint_errors(gt_path, read_json(results))}


def sec_ap_deltas(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    def one(run: RunData) -> None:
        if run.last_round == 0:
            raise Missing("one round only: no ticket to compare with the dense model")
        dense = read_json(run.folder.round(0).eval_metrics)
        ticket = read_json(run.folder.round(run.last_round).eval_metrics)
        deltas = {t: ap_deltas(dense, ticket, t) for t in ("bbox", "segm", "keypoints")
                  if t in dense and t in ticket}
        for iou, d in deltas.items():
            out = plot_dir / f"ap_deltas_{slug(run.label)}_{iou}.png"
            atomic_plot(lambda p: plot_ap_deltas(d, p, f"{run.label} {iou}: ticket - dense"), out)
            figure(section, out, f"{run.label}: {iou} AP delta (round {run.last_round} - round 0) "
                                 "by object size and by category, AP points")
        names = [(g, n) for g in ("overall", "size", "per_category") for n in next(iter(deltas.values()))[g]]
        rows = [[g, n, *(_points(deltas[t][g].get(n)) for t in deltas)] for g, n in names]
        table(section, ["group", "name", *deltas], rows, f"{run.label}: ticket - dense, AP points")
    per_run(section, runs, one)


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f}"


def sec_size_macs(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    series, rows, export_rows = {}, [], []
    for run in runs:
        try:
            entry = size_macs_series(run)
        except Missing as err:
            section.missing.append(f"not run ({run.label}): {err}")
            continue
        series[run.label] = entry
        macs = entry.get("effective_macs") or [None] * len(run.rounds)
        for r, bound, eff in zip(run.rounds, entry["bound_bytes"], macs):
            rows.append([run.label, str(r["round"]), fmt(r.get("sparsity")), f"{entry['dense_bytes'] / 2**20:.3f}",
                         f"{bound / 2**20:.3f}", _gmacs(entry.get("dense_macs")), _gmacs(eff)])
        if macs[-1] and entry.get("dense_macs") and entry["dense_bytes"]:
            disk, work = entry["bound_bytes"][-1] / entry["dense_bytes"], macs[-1] / entry["dense_macs"]
            section.text.append(
                f"{run.label}, round {run.rounds[-1]['round']}: disk (information bound) {100 * disk:.1f}% "
                f"of dense, effective MACs {100 * work:.1f}% of dense: disk size falls "
                + ("faster than MACs, as the paper finds." if disk < work else
                   "no faster than MACs here, unlike the paper."))
        export = run.summary.get("export")
        if export:
            export_rows.append([run.label, *(f"{export.get(k, 0) / 2**20:.3f}" for k in
                                             ("onnx_bytes", "gzip_bytes", "sparse_onnx_bytes",
                                              "compact_bytes", "bound_bytes")),
                                fmt(export.get("zeros_preserved")), fmt(export.get("max_abs_diff"), 7)])
        else:
            section.missing.append(f"not run ({run.label}): export (summary.json has no export)")
    if series:
        path = plots.plot_size_macs(series, plot_dir / "size_macs.png")
        figure(section, path, "Disk size (fp32 dense vs the information bound of the round's mask "
                              "+ nonzero values; markers: the exported ticket's files) and MACs per round")
        table(section, ["run", "round", "sparsity", "dense MiB", "bound MiB", "dense GMACs",
                        "effective GMACs"], rows, "Per round (parameters in fp32; MACs at the export size)")
    table(section, ["run", "ONNX MiB", "gzip MiB", "sparse ONNX MiB", "compact MiB", "bound MiB",
                    "zeros preserved", "max |diff| vs torch"], export_rows, "The exported ticket")


def _gmacs(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e9:.4f}"


def sec_latency(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    plotted, rows = [], []
    for run in runs:
        path = run.root / "bench" / "bench.json"
        bench = read_json(path) if path.is_file() else run.summary.get("bench")
        if not bench:
            section.missing.append(f"not run ({run.label}): benchmark (no bench/bench.json)")
            continue
        for b in bench:
            graph = b.get("graph") or b.get("model") or "model"
            if graph == "pipeline" and b.get("model"):
                graph = f"pipeline ({b['model']})"
            row = {"run": run.label, **b, "graph": graph}
            rows.append([run.label, row["graph"], str(b.get("engine")), str(b.get("batch")),
                         str(b.get("status")), fmt(b.get("p50_ms"), 2), fmt(b.get("p90_ms"), 2),
                         fmt(b.get("p99_ms"), 2), fmt(b.get("items_per_s"), 2), str(b.get("cores", "-")),
                         fmt(b.get("supported_op_fraction"), 3), b.get("reason") or ""])
            if (b.get("status") == "ok" and b.get("p50_ms") is not None) or b.get("status") == "failed":
                plotted.append(row)  # a failed engine keeps its line in the plot, marked failed
        _flag_load(section, run)
        _say_speedups(section, run, bench)
    if any(r.get("status") == "ok" for r in plotted):
        figure(section, plots.plot_latency(plotted, plot_dir / "latency.png"),
               "Latency per call on each engine (same ONNX file per graph): bar p50, | p90, x p99; "
               "an engine that failed is marked so on its line")
    table(section, ["run", "graph", "engine", "batch", "status", "p50 ms", "p90 ms", "p99 ms",
                    "items/s", "cores", "supported ops", "reason"], rows)


def _say_speedups(section: Section, run: RunData, bench: list[dict[str, Any]]) -> None:
    """The deployed ticket's two ratios side by side, from its pipeline row."""
    for b in bench:
        if b.get("speedups"):
            line, slower = describe_speedups(b["speedups"])
            section.text.append(f"Deployed ticket ({run.label}): {line}.")
            if slower:
                section.text.append(f"Warning ({run.label}): {slower}.")


def _flag_load(section: Section, run: RunData) -> None:
    """A line beside the bench table when the run's benchmark was taken under load."""
    path = run.root / "bench" / "machine.json"
    note = load_note(read_json(path)) if path.is_file() else None
    if note:
        section.text.append(f"Warning ({run.label}): the benchmark was {note} "
                            "(bench/machine.json); compare ratios within the run, with care.")


def sec_early_bird(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    keys = {"early_bird_iou": "early-bird IoU (mask at the snapshot vs at the end)",
            "mask_iou_with_previous": "IoU of pruned sets with the previous round"}
    series = {run.label: {name: [(r["round"], r["metrics"][key]) for r in run.rounds
                                 if r.get("metrics", {}).get(key) is not None]
                          for key, name in keys.items()} for run in runs}
    if not any(points for s in series.values() for points in s.values()):
        raise Missing("no round recorded early_bird_iou or mask_iou_with_previous")
    path = plots.plot_round_series(series, plot_dir / "early_bird.png", "IoU", "Mask stability per round")
    figure(section, path, "Early-bird IoU: how much of the mask is already decided early in a round")
    rows = [[label, str(rnd), name, fmt(v)] for label, s in series.items()
            for name, points in s.items() for rnd, v in points]
    table(section, ["run", "round", "measure", "IoU"], rows)


def sec_gallery(section: Section, runs: list[RunData], plot_dir: Path) -> None:
    def one(run: RunData) -> None:
        first, last = run.rounds[0], run.rounds[-1]
        models = [(("dense" if is_dense(first) else f"sparsity {first.get('sparsity', 0):.1%}")
                   + " (round 0)", run.folder.round(0).checkpoint)]
        if run.last_round > 0:
            ticket = run.folder.ticket
            models.append((f"ticket (round {run.last_round}, sparsity {last.get('sparsity', 0):.1%})",
                           ticket if ticket.is_file() else run.folder.round(run.last_round).checkpoint))
        path, caption = gallery_image(run.root, models, plot_dir / f"gallery_{slug(run.label)}.png")
        figure(section, path, f"{run.label}: {caption}")
    per_run(section, runs, one)


SECTIONS: list[tuple[str, str, Callable[[Section, list[RunData], Path], None]]] = [
    ("summary", "Summary: dense vs every round", sec_summary),
    ("sparsity-map", "Sparsity vs mAP", sec_sparsity_map),
    ("controls", "Ticket vs controls (reinit, random mask, rewind to init)", sec_controls),
    ("transfer", "Transfer vs direct pruning (Appendix A)", sec_transfer),
    ("tide", "TIDE errors: dense vs ticket", sec_tide),
    ("keypoints", "Keypoint errors", sec_keypoints),
    ("convergence", "Convergence", sec_convergence),
    ("ap-deltas", "AP by object size and category: ticket - dense", sec_ap_deltas),
    ("size-macs", "Disk size and MACs vs sparsity", sec_size_macs),
    ("latency", "Latency per engine", sec_latency),
    ("int8", "INT8 ticket: quantization after the lottery", sec_int8),
    ("early-bird", "Early-bird IoU per round", sec_early_bird),
    ("runtime", "Runtime-aware sparsity: per-layer spread, predicted vs measured latency", sec_runtime),
    ("gallery", "Predictions: dense vs ticket", sec_gallery),
]
