"""Failed checks are said where the user looks (compress.run.checks): one warning line where they
happen, the run's `warnings:` block and summary.json, the report beside the number, and exit 1
where the command's whole purpose failed."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper

import compress.run.pipeline as pipeline
import compress.stages.bench as bench_stage
import compress.stages.evaluate as evaluate_stage
import compress.evaluate.runtimes.bench as runtime_bench
from compress.cli import main
from compress.core.deploy_manifest import Canvas
from compress.core.errors import UserError
from compress.report.page import Section
from compress.report.run_data import load_run
from compress.report.sections import _engine_rows, sec_latency, sec_summary
from compress.run.checks import collecting, format_warnings, run_warnings
from compress.core.folders import RunFolder
from compress.run.profile import profile_load

PARITY = {"status": "failed", "images": 4, "box_max_abs_diff_px": 86.6, "box_tolerance_px": 0.5,
          "reason": "boxes differ by 86.6 px (tolerance 0.5 px)"}
FAILED_DS = {"engine": "deepsparse", "graph": "pipeline", "status": "failed", "bbox_mAP": 0.0081,
             "parity_vs_onnxruntime": PARITY}


def _tiny_onnx(path: Path) -> Path:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _fake_evaluation(monkeypatch, tmp_path: Path, result: dict) -> None:
    """`compress evaluate` up to the engine: a run folder, and an engine returning `result`."""
    recipe = SimpleNamespace(model=SimpleNamespace(arch="maskrcnn"),
                             data=SimpleNamespace(dataset="coco", val_split="val"),
                             evaluate=SimpleNamespace(convention="coco"))
    monkeypatch.setattr(evaluate_stage, "run_of", lambda model: RunFolder(tmp_path / "run"))
    monkeypatch.setattr(evaluate_stage, "load_model", lambda path: SimpleNamespace(recipe=recipe))
    monkeypatch.setattr(evaluate_stage, "build_dataset",
                        lambda *a, **k: SimpleNamespace(label_to_cat_id={1: 1}))
    monkeypatch.setattr(evaluate_stage, "make_loader", lambda *a, **k: [])
    monkeypatch.setattr(evaluate_stage, "ground_truth_path", lambda *a: tmp_path / "gt.json")
    monkeypatch.setattr(evaluate_stage, "evaluate_engine", lambda *a, **k: dict(result))


def test_evaluate_whose_only_engine_failed_parity_warns_and_exits_1(monkeypatch, tmp_path, capsys):
    _fake_evaluation(monkeypatch, tmp_path, FAILED_DS)
    code = main(["evaluate", str(tmp_path / "run" / "export"), "--data", str(tmp_path),
                 "--engine", "deepsparse"])
    err = capsys.readouterr().err
    assert code == 1
    warning = [line for line in err.splitlines() if " W " in line]
    assert len(warning) == 1, err
    assert ("evaluate deepsparse: parity check vs ONNX Runtime FAILED (boxes differ by 86.6 px "
            "(tolerance 0.5 px)); its bbox mAP 0.0081 is not to be trusted") in warning[0]
    assert f"evaluate: wrote {tmp_path / 'run' / 'evaluate' / ('deepsparse-' + tmp_path.name)}" in err
    assert not (tmp_path / "run" / "eval").exists()  # the run's own evaluation is never overwritten
    assert err.strip().splitlines()[-1].startswith("error: evaluate deepsparse failed: boxes differ")


def test_evaluate_ok_says_where_it_wrote(monkeypatch, tmp_path, capsys):
    _fake_evaluation(monkeypatch, tmp_path, {"engine": "onnxruntime", "bbox_mAP": 0.2})
    assert main(["evaluate", str(tmp_path / "model.onnx"), "--data", str(tmp_path)]) == 0
    assert (f"evaluate: wrote {tmp_path / 'run' / 'evaluate' / ('onnxruntime-' + tmp_path.name)}"
            in capsys.readouterr().err)


def test_failed_parity_collected_into_the_run_and_its_end_block(tmp_path):
    run = RunFolder(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    with collecting(run):
        evaluate_stage.warn_if_failed("deepsparse", FAILED_DS, {"onnxruntime": {"bbox_mAP": 0.023}})
        logging.getLogger("x").warning("an untagged warning is not a failed check")
    warnings = run_warnings(run.read_summary())
    assert [w["check"] for w in warnings] == ["parity"]
    assert "(onnxruntime 0.0230)" in warnings[0]["message"]
    block = format_warnings(warnings).splitlines()
    assert block[0].startswith("warnings: 1 check(s) failed")
    assert block[1].startswith("  - [parity] evaluate deepsparse: parity check vs ONNX Runtime FAILED")


def _report_run(root: Path) -> RunFolder:
    run = RunFolder(root)
    engine = run.eval_dir("deepsparse")
    engine.mkdir(parents=True)
    (engine / "metrics.json").write_text(json.dumps({"bbox": {"AP": 0.0081, "AP50": 0.02}}))
    (engine / "parity.json").write_text(json.dumps(PARITY))
    run.update_summary(rounds=[{"round": 0, "sparsity": 0.0, "prunable_sparsity": 0.0, "metrics": {}}],
                       warnings=[{"check": "shortfall", "message": "gradual pruning reached sparsity "
                                  "0.05 of target 0.80 over 3 tensors"}])
    return run


def test_report_engine_note_says_parity_failed(tmp_path):
    data = load_run(_report_run(tmp_path / "run").root, "run")
    (row,) = _engine_rows(data)
    assert row[2] == "0.0081"
    assert row[-1] == "parity FAILED: boxes 86.6 px apart (tolerance 0.5 px) vs ONNX Runtime"
    section = Section("summary", "Summary")
    sec_summary(section, [data], tmp_path)
    assert any("shortfall" in t and "0.05 of target 0.80" in t for t in section.text)


def test_report_flags_bench_taken_under_load(tmp_path):
    run = _report_run(tmp_path / "run")
    run.bench.mkdir(parents=True)
    (run.bench / "bench.json").write_text(json.dumps([{"engine": "onnxruntime", "graph": "model.onnx",
                                                       "batch": 1, "status": "failed", "reason": "x"}]))
    (run.bench / "machine.json").write_text(json.dumps({"under_load": True, "other_cpu_cores": 1.2,
                                                        "logical_cpus": 2}))
    section = Section("latency", "Latency")
    sec_latency(section, [load_run(run.root, "run")], tmp_path)
    assert any("under load (1.20 cores of other work on 2 CPUs)" in t for t in section.text)


def test_bench_whose_only_engine_crashes_exits_1(monkeypatch, tmp_path, capsys):
    model = _tiny_onnx(tmp_path / "model.onnx")
    monkeypatch.setattr(runtime_bench, "deepsparse_bench", lambda *a, **k: {
        "status": "failed", "reason": "DeepSparse child died with SIGSEGV compiling the graph"})
    assert main(["bench", str(model), "--engine", "deepsparse", "--iterations", "1"]) == 1
    captured = capsys.readouterr()
    assert "model.onnx  deepsparse  1      failed" in captured.out
    lines = captured.err.strip().splitlines()
    assert any(" W " in line and "bench model.onnx deepsparse batch 1: FAILED (DeepSparse child died"
               in line for line in lines), captured.err
    assert lines[-1] == ("error: bench: no requested engine gave a figure: deepsparse: failed "
                         "(DeepSparse child died with SIGSEGV compiling the graph)")


def test_bench_under_load_prints_one_warning(monkeypatch, tmp_path, capsys):
    model = _tiny_onnx(tmp_path / "model.onnx")
    real_finish = bench_stage.finish

    def busy(info):
        return {**real_finish(info), "under_load": True, "other_cpu_cores": 1.2}

    monkeypatch.setattr(bench_stage, "finish", busy)
    assert main(["bench", str(model), "--engine", "onnxruntime", "--iterations", "2",
                 "--warmup", "0"]) == 0
    err = capsys.readouterr().err
    loaded = [line for line in err.splitlines() if "under load" in line]
    assert len(loaded) == 1 and " W " in loaded[0], err
    assert "bench: taken under load (1.20 cores of other work" in loaded[0]
    assert json.loads((tmp_path / "machine.json").read_text())["under_load"] is True


def test_bench_export_folder_times_the_deployment(monkeypatch, tmp_path, capsys):
    export = tmp_path / "export"
    (export / "deploy").mkdir(parents=True)
    calls = {}
    monkeypatch.setattr(bench_stage, "read_manifest",
                        lambda folder: SimpleNamespace(canvas=Canvas(height=32, width=48)))

    def fake_pipeline(folder, images, *, engines, warmup, iterations, cores):
        calls.update(folder=folder, sizes={tuple(i.shape) for i in images}, engines=engines)
        return [{"engine": "deepsparse", "graph": "pipeline", "batch": 1, "status": "ok",
                 "p50_ms": 12.5, "p90_ms": 13.0, "p99_ms": 14.0, "mean_ms": 12.7,
                 "items_per_s": 80.0, "cores": 2}]

    monkeypatch.setattr(bench_stage, "bench_pipeline", fake_pipeline)
    assert main(["bench", str(export), "--engine", "deepsparse"]) == 0
    assert calls == {"folder": export, "sizes": {(3, 32, 32)}, "engines": ["deepsparse"]}
    assert "pipeline  deepsparse  1      ok      12.50" in capsys.readouterr().out
    assert json.loads((tmp_path / "bench" / "bench.json").read_text())[0]["graph"] == "pipeline"  # RUN/bench
    assert main(["bench", str(tmp_path)]) == 0 and calls["folder"] == export  # the run folder
    assert main(["bench", str(export), "--engine", "onnxruntime-cuda"]) == 2


def test_profile_under_load_is_described_and_refused(tmp_path, caplog):
    profile = {"layers": {"a.weight": {"status": "ok", "other_cpu_cores": 1.2},
                          "b.weight": {"status": "ok", "other_cpu_cores": 0.01}}}
    note = profile_load(profile)
    assert note.startswith("1 of 2 layers timed under load (up to 1.20 cores of other work)")
    assert profile_load({"layers": {"a.weight": {"other_cpu_cores": 0.0}}}) is None
    recipe = SimpleNamespace(image_size=64)
    given = str(tmp_path / "p.json")
    with pytest.raises(UserError, match="timed under load"):
        pipeline._check_profile_load(profile, given, None, [], recipe, refuse=True)
    with caplog.at_level(logging.WARNING):
        pipeline._check_profile_load(profile, given, None, [], recipe, refuse=False)
    (record,) = [r for r in caplog.records if getattr(r, "check", None) == "loaded_profile"]
    assert given in record.getMessage() and "1.20 cores" in record.getMessage()


def test_strict_run_exits_1_after_writing_when_a_check_failed(monkeypatch, tmp_path, capsys):
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    run.update_summary(warnings=[{"check": "under_load", "message": "bench: taken under load"}])
    monkeypatch.setattr(pipeline, "run_recipe", lambda *a, **k: run)
    assert main(["run", "recipe.yaml"]) == 0
    assert main(["run", "recipe.yaml", "--strict"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --strict: 1 check(s) failed")


def test_profile_built_under_load_prints_one_warning(monkeypatch, tmp_path, capsys):
    import compress.lottery.profile as profile_mod
    from support.recipes import TINY_LOTTERY

    def flat(module, shape, grid, cores, warmup, iterations):
        return {"status": "ok", "latency_ms": [1.0 for _ in grid]}

    real_finish = profile_mod.finish
    monkeypatch.setattr(profile_mod, "time_layer", flat)
    monkeypatch.setattr(profile_mod, "finish", lambda info: {**real_finish(info), "under_load": True,
                                                             "other_cpu_cores": 1.5})
    out = tmp_path / "p.json"
    overrides = [o for o in TINY_LOTTERY if not o.startswith("evaluate.")]
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "maskrcnn_lth.yaml"
    assert main(["-q", "profile", str(recipe), "--smoke", "--out", str(out),
                 *[a for o in overrides for a in ("--set", o)]]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "under load" in line]
    assert len(lines) == 1 and " W " in lines[0]
    assert f"profile {out}: " in lines[0] and "(up to 1.50 cores of other work)" in lines[0]


def test_full_graph_failing_on_deepsparse_beside_a_working_deployment_is_not_warned(caplog):
    rows = [{"engine": "deepsparse", "graph": "model.onnx", "batch": 1, "status": "failed",
             "reason": "compile crashed (Segmentation fault)"},
            {"engine": "deepsparse", "graph": "pipeline", "batch": 1, "status": "ok"}]
    with caplog.at_level(logging.INFO):
        bench_stage.warn_bench(rows, {"under_load": False}, Path("machine.json"))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        bench_stage.warn_bench(rows[:1], {"under_load": False}, Path("machine.json"))
    (warned,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned.check == "engine_failed" and "model.onnx deepsparse batch 1: FAILED" in warned.getMessage()


def test_evaluate_stage_warns_the_failed_parity_beside_the_ort_number(monkeypatch, tmp_path, caplog):
    results = {"onnxruntime": {"engine": "onnxruntime", "bbox_mAP": 0.023}, "deepsparse": FAILED_DS}
    monkeypatch.setattr(evaluate_stage, "evaluate_engine", lambda engine, *a, **k: dict(results[engine]))
    monkeypatch.setattr(evaluate_stage, "analyses", lambda *a, **k: {})
    recipe = SimpleNamespace(evaluate=SimpleNamespace(enabled=True, engines=["onnxruntime", "deepsparse"],
                                                      convention="coco", tide=False, keypoint_errors=False),
                             export=SimpleNamespace(enabled=True), data=SimpleNamespace(dataset="coco"))
    data = SimpleNamespace(gt_path=tmp_path / "gt.json", label_to_cat_id={1: 1}, task="segmentation",
                           scorer=None)
    ctx = SimpleNamespace(recipe=recipe, run=RunFolder(tmp_path), data=data, loaded=None,
                          loaders={"val": []}, progress=False)
    with caplog.at_level(logging.WARNING):
        out = evaluate_stage.EvaluateStage().run(ctx)
    assert out["deepsparse"]["status"] == "failed"
    (record,) = [r for r in caplog.records if getattr(r, "check", None) == "parity"]
    assert record.getMessage() == (
        "evaluate deepsparse: parity check vs ONNX Runtime FAILED (boxes differ by 86.6 px "
        "(tolerance 0.5 px)); its bbox mAP 0.0081 (onnxruntime 0.0230) is not to be trusted")


def test_bench_table_has_a_graph_column_and_each_note_once():
    note = "graph takes one image: batch 2 = 2 sequential calls"
    rows = [{"engine": e, "batch": 2, "status": "ok", "p50_ms": 1.0, "model": "model.onnx",
             "graph": g, "note": note} for g in ("model.onnx", "backbone.onnx") for e in ("onnxruntime", "deepsparse")]
    table = runtime_bench.format_bench_table(rows).splitlines()
    assert table[0].split()[:2] == ["graph", "engine"]
    assert [line.split()[0] for line in table[2:6]] == ["model.onnx"] * 2 + ["backbone.onnx"] * 2
    assert sum(note in line for line in table) == 1
