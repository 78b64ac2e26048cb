"""The optional competitor: the same partition with OpenVINO in DeepSparse's place, and the full
graph on OpenVINO, give ONNX Runtime's detections; without the extra, a failed bench row."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from compress.evaluate.runtimes import pipeline_bench
from compress.evaluate.runtimes.pipeline import DeployedDetector, to_canvas
from tests.support.deployments import images, tiny_deployment

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino (the optional extra) is not installed")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    return tiny_deployment("maskrcnn", tmp_path_factory.mktemp("ov"))[0]


@needs_openvino
def test_openvino_fp32_on_the_partition_matches_onnxruntime(deployed):
    compared = 0
    with DeployedDetector(deployed, engine="onnxruntime") as ort_run, \
            DeployedDetector(deployed, engine="openvino-fp32") as ov_run:
        assert set(ov_run.part_engines.values()) >= {"openvino-fp32", "onnxruntime", "torch"}
        for image in images():
            canvas = to_canvas(image, 64, 64)[0]
            ref, got = ort_run.run_canvas(canvas), ov_run.run_canvas(canvas)
            assert got["boxes"].shape == ref["boxes"].shape
            if len(ref["boxes"]):
                assert np.abs(got["boxes"] - ref["boxes"]).max() < 1e-2
                compared += len(ref["boxes"])
    assert compared > 0


@needs_openvino
def test_openvino_rows_in_the_interleaved_bench(deployed):
    rows = pipeline_bench.bench_pipelines(
        {"ov": (deployed, "openvino", "full_graph"), "ov_dep": (deployed, "openvino-fp32", "deployment")},
        images(2), warmup=0, iterations=2, cores=1)
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in rows.values())
    assert rows["ov_dep"]["part_engines"]["backbone"] == "openvino-fp32"


def test_without_the_extra_the_row_fails_with_the_reason(deployed, monkeypatch):
    monkeypatch.setattr(pipeline_bench, "openvino_missing_reason", lambda: "openvino is not installed")
    rows = pipeline_bench.bench_pipelines({"ov": (deployed, "openvino", "full_graph")}, images(1),
                                          warmup=0, iterations=1, cores=1)
    assert rows["ov"]["status"] == "failed" and "not installed" in rows["ov"]["reason"]
