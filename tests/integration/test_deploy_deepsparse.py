"""The deployment on DeepSparse (child process): matches ONNX Runtime; crashes, kills and
timeouts of the child are failed results, never a hang, a dead parent or an ok."""
from __future__ import annotations

import hashlib
import json
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from compress.stages.evaluate import evaluate_deployment
from compress.evaluate.metrics.scorer import Scorer
from compress.stages.predict import predict_command
from compress.evaluate.runtimes.deepsparse import deepsparse_missing_reason
from compress.evaluate.runtimes.deepsparse_server import DeepSparseFailed
from compress.evaluate.runtimes.parity import summarize
from compress.evaluate.runtimes.pipeline import DeployedDetector
from compress.evaluate.runtimes.pipeline_bench import bench_pipeline
from tests.support.deployments import images, tiny_deployment

pytestmark = pytest.mark.skipif(deepsparse_missing_reason() is not None,
                                reason=str(deepsparse_missing_reason()))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    folder, manifest = tiny_deployment("maskrcnn", tmp_path_factory.mktemp("export"))
    assert manifest.status == "ok"
    return folder


def test_deepsparse_deployment_matches_onnxruntime(export_dir):
    batch = images(3) + [torch.rand(3, 48, 80, generator=torch.Generator().manual_seed(9))]
    with DeployedDetector(export_dir, engine="onnxruntime") as ort, \
            DeployedDetector(export_dir, engine="deepsparse") as ds:
        result = summarize([(ort(image), ds(image)) for image in batch])
        fractions = ds.supported_op_fraction
    assert result["status"] == "ok", result
    assert result["detections_compared"] > 0 and result["box_max_abs_diff_px"] < 0.5
    assert set(fractions) >= {"backbone/0", "box_head/0", "mask_head/0"}


def _broken(export_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    manifest = json.loads((broken / "deploy" / "manifest.json").read_text())
    box = next(p for p in manifest["parts"] if p["name"] == "box_head")
    (broken / "deploy" / box["file"]).write_bytes(b"not an onnx file")
    # a part DeepSparse cannot compile, recorded as such (the checksum matches: a part cut short
    # after the export is refused before it runs, tests/unit/test_manifest_checks.py)
    box["sha256"] = hashlib.sha256(b"not an onnx file").hexdigest()
    (broken / "deploy" / "manifest.json").write_text(json.dumps(manifest))
    return broken


def test_bad_part_file_is_a_failed_row(export_dir, tmp_path):
    broken = _broken(export_dir, tmp_path)
    with pytest.raises(DeepSparseFailed, match="compile"):
        DeployedDetector(broken, engine="deepsparse")
    loader = [(images(1), [{"image_id": 1}])]
    scorer = Scorer(tmp_path / "gt.json", {1: 1, 2: 2}, "segmentation")
    row = evaluate_deployment(broken / "deploy", loader, scorer, tmp_path / "eval")
    assert row["status"] == "failed" and row["engine"] == "deepsparse"
    rows = bench_pipeline(broken, images(1), iterations=1, warmup=0)
    assert {r["engine"]: r["status"] for r in rows} == {"onnxruntime": "ok", "deepsparse": "failed"}


def test_killed_child_is_a_clear_error(export_dir):
    with DeployedDetector(export_dir, engine="deepsparse") as ds:
        ds(images(1)[0])
        ds.server.proc.kill()
        tick = time.monotonic()
        with pytest.raises(DeepSparseFailed, match="crashed|failed"):
            ds(images(1)[0])
        assert time.monotonic() - tick < 30


def test_timeout_kills_the_child(export_dir):
    with DeployedDetector(export_dir, engine="deepsparse", run_timeout_s=1e-6) as ds:
        with pytest.raises(DeepSparseFailed, match="timed out"):
            ds(images(1)[0])
        assert ds.server.proc.poll() is not None


def test_predict_deepsparse_matches_onnxruntime(export_dir, tmp_path):
    pictures = tmp_path / "images"
    pictures.mkdir()
    for index, image in enumerate(images(2) + [torch.rand(3, 50, 70)]):
        array = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(array).save(pictures / f"img{index}.png")
    found = {}
    for engine in ("onnxruntime", "deepsparse"):
        target = predict_command(export_dir, pictures, engine=engine, out=tmp_path / engine,
                                 score_threshold=0.0)
        found[engine] = json.loads(target.read_text())
        assert len(list((tmp_path / engine).glob("*.png"))) == 3
    ort, ds = found["onnxruntime"], found["deepsparse"]
    assert len(ort) == len(ds) > 0
    for a, b in zip(ort, ds):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 0.5
