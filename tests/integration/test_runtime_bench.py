"""Runtime benchmark: ORT and DeepSparse rows on a tiny backbone, skips and crashes as data."""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.core.errors import ModelFileError
from compress.models.build import build_model
from compress.evaluate.runtimes.deepsparse import run_child
from compress.evaluate.runtimes.ort import EngineUnavailable, cuda_unavailable_reason, ort_session
from compress.evaluate.runtimes.bench import (
    bench_onnx,
    format_bench_table,
    graph_inputs,
    latency_stats,
)
from compress.export.onnx_export import BackboneGraph

SIZE = 64


def _tiny_detector() -> nn.Module:
    torch.manual_seed(0)
    return build_model("maskrcnn", "tiny", num_classes=3, min_size=SIZE, max_size=SIZE).eval()


@pytest.fixture(scope="module")
def backbone_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "backbone.onnx"
    module = BackboneGraph(_tiny_detector()).eval()  # export's own graph, batch axis left fixed
    torch.onnx.export(module, (torch.rand(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                      opset_version=17, input_names=["images"])
    return path


@pytest.fixture(scope="module")
def full_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(_tiny_detector(), ([torch.rand(3, SIZE, SIZE)],), str(path), dynamo=False,
                      opset_version=17, input_names=["image"])
    return path


def test_bench_rows_for_ort_and_deepsparse(backbone_onnx: Path, tmp_path: Path) -> None:
    rows = bench_onnx(backbone_onnx, batch_sizes=(1,), warmup=2, iterations=12)
    by_engine = {row["engine"]: row for row in rows}
    assert set(by_engine) == {"onnxruntime", "onnxruntime-cuda", "deepsparse"}
    for engine in ("onnxruntime", "deepsparse"):
        row = by_engine[engine]
        assert row["status"] == "ok", row
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["items_per_s"] == pytest.approx(1000.0 / row["mean_ms"])
        assert row["cores"] >= 1 and row["model"] == "backbone.onnx"
    assert 0 < by_engine["deepsparse"]["supported_op_fraction"] <= 1
    cuda = by_engine["onnxruntime-cuda"]
    reason = cuda_unavailable_reason()
    if reason:  # this machine: no GPU / onnxruntime-gpu
        assert cuda["status"] == "skipped" and cuda["reason"] == reason
        assert cuda["p50_ms"] is None
    assert json.loads(json.dumps(rows)) == rows  # bench.json holds the rows as they are
    table = format_bench_table(rows)
    assert "deepsparse" in table and f"{by_engine['onnxruntime']['p50_ms']:.2f}" in table


def test_batch_two_needs_a_dynamic_batch_axis(backbone_onnx: Path, tmp_path: Path) -> None:
    (fixed,) = bench_onnx(backbone_onnx, engines=("onnxruntime",), batch_sizes=(2,), iterations=1)
    assert fixed["status"] == "skipped" and "fixed batch of 1" in fixed["reason"]
    path = tmp_path / "dynamic.onnx"
    module = BackboneGraph(_tiny_detector()).eval()
    torch.onnx.export(module, (torch.rand(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                      opset_version=17, input_names=["images"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}})
    specs, batched = graph_inputs(path, batch=2, image_size=(32, 48))
    assert batched and specs[0].shape == (2, 3, 32, 48) and specs[0].dynamic
    (row,) = bench_onnx(path, engines=("onnxruntime",), batch_sizes=(2,), warmup=1,
                        iterations=3, image_size=32)
    assert row["status"] == "ok" and row["note"] is None
    assert row["items_per_s"] == pytest.approx(2000.0 / row["mean_ms"])


def test_full_rcnn_graph_crash_is_a_failed_row(full_onnx: Path) -> None:
    specs, batched = graph_inputs(full_onnx, batch=2, image_size=SIZE)
    assert not batched and specs[0].shape == (3, SIZE, SIZE)
    rows = bench_onnx(full_onnx, engines=("onnxruntime", "deepsparse"), batch_sizes=(2,),
                      warmup=0, iterations=2, image_size=SIZE)
    ort_row, ds_row = rows
    assert ort_row["status"] == "ok" and "2 sequential calls" in ort_row["note"]
    assert ds_row["status"] == "failed" and ds_row["p50_ms"] is None
    # DeepSparse 1.8 catches the SIGSEGV itself, prints "Received signal: Segmentation fault"
    # and exits 1; the row names the crash, not just the exit code
    assert ds_row["reason"].startswith("compile crashed (Segmentation fault, signal 11"), ds_row


def test_child_killed_by_sigsegv_becomes_data(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    row = run_child([sys.executable, "-c", code], 60, tmp_path / "result.json")
    assert row == {"engine": "deepsparse", "status": "failed",
                   "reason": f"compile crashed (SIGSEGV, signal {int(signal.SIGSEGV)})"}


def test_child_timeout_and_error_become_data(tmp_path: Path) -> None:
    slow = run_child([sys.executable, "-c", "import time; time.sleep(30)"], 1, tmp_path / "r.json")
    assert slow["status"] == "failed" and "timed out after 1 s" in slow["reason"]
    bad = run_child([sys.executable, "-c", "raise ValueError('bad graph')"], 60, tmp_path / "r.json")
    assert bad["status"] == "failed" and "ValueError: bad graph" in bad["reason"]


def test_cuda_session_raises_clear_error_without_gpu(backbone_onnx: Path) -> None:
    if cuda_unavailable_reason() is None:
        pytest.skip("CUDA provider present: nothing to refuse")
    with pytest.raises(EngineUnavailable, match="onnxruntime-gpu"):
        ort_session(backbone_onnx, provider="cuda")


def test_unreadable_onnx_is_a_model_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelFileError, match="bad.onnx"):
        bench_onnx(bad, engines=("onnxruntime",))
    with pytest.raises(ValueError, match="unknown engine"):
        bench_onnx(bad, engines=("tensorrt",))


def test_latency_stats_known_values() -> None:
    stats = latency_stats([float(v) for v in range(1, 101)], items_per_call=4)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["items_per_s"] == pytest.approx(4 * 1000 / 50.5)
