"""The stages after the lottery on a real smoke run: the run-folder contract, the deployed ONNX
scored like the torch model, and bench.json rows for ONNX Runtime and DeepSparse."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.smoke import smoke_run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run_dir(tmp_path_factory)


def test_run_folder_contract(run_dir: Path) -> None:
    for name in ("recipe.yaml", "ticket.pt", "metrics.jsonl", "summary.json", "report.md", "report.html",
                 "export/model.onnx", "export/backbone.onnx", "export/verify.json", "export/model.lthz",
                 "bench/bench.json", "eval/torch/metrics.json", "eval/onnxruntime/metrics.json",
                 "eval/torch/tide.json"):
        assert (run_dir / name).is_file(), name
    for k in (0, 1):
        for name in ("checkpoint.pt", "mask.pt", "sparsity.json", "metrics.json"):
            assert (run_dir / "rounds" / f"round_{k}" / name).is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["export"]["zeros_preserved"] is True
    assert summary["macs"]["effective"] < summary["macs"]["dense"]
    assert json.loads((run_dir / "export" / "verify.json").read_text())["passed"] is True


def test_onnx_on_ort_scores_like_torch(run_dir: Path) -> None:
    evals = json.loads((run_dir / "summary.json").read_text())["eval"]
    for key in ("bbox_mAP", "segm_mAP", "bbox_AP50"):
        assert abs(evals["onnxruntime"][key] - evals["torch"][key]) <= 0.001, key  # 0.1 AP point


def test_bench_rows_for_ort_and_deepsparse(run_dir: Path) -> None:
    rows = json.loads((run_dir / "bench" / "bench.json").read_text())
    ok = {(r["graph"], r["engine"]): r for r in rows if r["status"] == "ok"}
    for key in (("model.onnx", "onnxruntime"), ("backbone.onnx", "onnxruntime"),
                ("backbone.onnx", "deepsparse")):
        row = ok[key]
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["items_per_s"] > 0
    full_ds = [r for r in rows if r["graph"] == "model.onnx" and r["engine"] == "deepsparse"]
    assert full_ds and (full_ds[0]["status"] == "ok" or full_ds[0]["reason"])  # a crash is data


def test_deployed_ticket_carries_both_ratios(run_dir: Path) -> None:
    """The ticket's full graph on ORT, its deployment on DeepSparse and round 0's dense model
    deployed the same way, interleaved; the DeepSparse ticket row holds the two ratios, computed
    from those rows, and the report says them."""
    rows = [r for r in json.loads((run_dir / "bench" / "bench.json").read_text())
            if r["graph"] == "pipeline"]
    by = {(r["model"], r["engine"]): r for r in rows}
    full, ticket = by[("ticket", "onnxruntime")], by[("ticket", "deepsparse")]
    dense = by[("dense (round 0)", "deepsparse")]
    assert all(r["status"] == "ok" for r in (full, ticket, dense))
    found = ticket["speedups"]
    assert found["end_to_end"] == full["p50_ms"] / ticket["p50_ms"]
    assert found["sparsity_gain"] == dense["p50_ms"] / ticket["p50_ms"]
    outside = sum(ms for part, ms in ticket["parts"].items()
                  if ticket["part_engines"][part] != "deepsparse") / sum(ticket["parts"].values())
    assert 0 < found["outside_deepsparse"] == outside < 1
    assert f"end to end {found['end_to_end']:.2f}x" in (run_dir / "report.md").read_text()


def test_evaluate_command_reproduces_the_run_metrics(run_dir: Path, tmp_path: Path, capsys) -> None:
    from compress.cli import main

    evals = json.loads((run_dir / "summary.json").read_text())["eval"]
    for model, engine in ((run_dir / "ticket.pt", "torch"), (run_dir / "export" / "model.onnx", "onnxruntime")):
        out = tmp_path / engine
        assert main(["-q", "evaluate", str(model), "--data", str(run_dir / "data"), "--out", str(out)]) == 0
        capsys.readouterr()
        scored = json.loads((out / "metrics.json").read_text())
        assert abs(scored["bbox"]["AP"] - evals[engine]["bbox_mAP"]) < 1e-9
