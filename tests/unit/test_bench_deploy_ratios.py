"""bench_deploy's two ratios side by side (end to end, sparsity's own gain) and the share of a
deployed call spent outside DeepSparse, computed from the rows as the benchmark writes them."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_deploy", ROOT / "benchmarks" / "bench_deploy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_deploy"] = module
    spec.loader.exec_module(module)
    return module


def _row(engine, sparsity, runner, p50, parts=None, engines=None, status="ok"):
    return {"engine": engine, "sparsity": sparsity, "runner": runner, "p50_ms": p50,
            "status": status, "parts": parts or {}, "part_engines": engines or {}}


def test_ratios_and_share(bench):
    engines = {"canvas": "host", "backbone": "deepsparse", "glue_1": "onnxruntime",
               "box_roi_pool": "torch", "box_head": "deepsparse"}
    rows = [_row("onnxruntime", 0.0, "full_graph", 1200.0),
            _row("onnxruntime", 0.0, "deployment", 900.0),
            _row("deepsparse", 0.0, "deployment", 600.0),
            _row("deepsparse", 0.9, "deployment", 300.0,
                 {"canvas": 1.0, "backbone": 150.0, "glue_1": 20.0, "box_roi_pool": 29.0,
                  "box_head": 100.0}, engines),
            _row("deepsparse", 0.8, "deployment", None, status="failed")]
    found = bench.ratios(rows)
    assert found["end_to_end_90"] == pytest.approx(4.0)
    assert found["sparsity_gain_90"] == pytest.approx(2.0)
    assert found["sparsity_gain_0"] == pytest.approx(1.0)
    assert found["ort_dense_deployment_over_deepsparse_90"] == pytest.approx(3.0)
    assert found["non_deepsparse_share_90"] == pytest.approx(50.0 / 300.0)
    assert found["end_to_end_80"] is None and found["non_deepsparse_share_80"] is None
    assert found["non_deepsparse_share_0"] is None  # no part breakdown: no share
