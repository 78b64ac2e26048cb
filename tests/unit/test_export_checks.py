"""Export checks that can fail: parity with nothing compared fails; a ticket that prunes no
backbone tensor exports (its backbone zero check says it had nothing to check); lost zeros in the
backbone graph still fail."""
from __future__ import annotations

import json

import pytest
import torch
from support.onnx_models import SIZE, pruned_tiny

from compress.recipe.load import validate
from compress.core.folders import RunFolder
from compress.run.loaded import LoadedModel
from compress.stages.export import export_ticket
from compress.export.onnx_export import export_backbone, export_full
from compress.export.verify import VerificationError, verify_parity, verify_zeros

RECIPE = {"name": "t", "model": {"arch": "fasterrcnn", "backbone": "tiny", "min_size": SIZE,
                                 "max_size": SIZE},
          "train": {"iterations": 10, "epochs": None}}


def _images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return [torch.rand(3, SIZE, SIZE, generator=gen) for _ in range(2)]


@pytest.fixture()
def tiny():
    torch.set_num_threads(1)
    return pruned_tiny("fasterrcnn")


def _export(model, mask, tmp_path):
    loaded = LoadedModel(validate(RECIPE, "test"), model, mask, RunFolder(tmp_path))
    return export_ticket(loaded, tmp_path / "export", images=_images())


def test_parity_with_no_detection_on_either_side_fails(tiny, tmp_path):
    model, _ = tiny
    model.roi_heads.score_thresh = 1.0  # nothing can score above it
    path = export_full(model, tmp_path / "model.onnx", image_size=SIZE)
    result = verify_parity(path, model, _images(), kind="full")
    assert result["torch_detections"] == result["onnx_detections"] == 0
    assert not result["passed"]
    assert "no detection was compared" in result["reason"]


def test_export_compares_detections_when_the_ticket_scores_nothing(tiny, tmp_path):
    model, mask = tiny
    model.roi_heads.score_thresh = 1.0
    summary = _export(model, mask, tmp_path)
    parity = json.loads((tmp_path / "export" / "verify.json").read_text())["checks"]["parity_full"]
    assert parity["passed"] and parity["score_thresh"] == 0.0
    assert parity["deployed_counts"] == {"torch_detections": 0, "onnx_detections": 0}
    assert parity["matched"] > 0 and parity["matched"] == parity["torch_detections"]
    assert model.roi_heads.score_thresh == 1.0  # restored
    assert summary["zeros_preserved"]


def test_ticket_without_backbone_tensors_exports(tiny, tmp_path):
    model, mask = tiny
    heads_only = {n: m for n, m in mask.items() if not n.startswith("backbone.")}
    assert heads_only and len(heads_only) < len(mask)
    summary = _export(model, heads_only, tmp_path)
    checks = json.loads((tmp_path / "export" / "verify.json").read_text())["checks"]
    backbone = checks["zeros_backbone"]
    assert backbone["passed"] and backbone["checked"] == 0
    assert "nothing to check" in backbone["note"]
    assert checks["zeros_full"]["checked"] == len(heads_only)
    assert summary["zeros_preserved"]


def test_lost_backbone_zeros_still_fail(tiny, tmp_path):
    model, mask = tiny
    name = "backbone.body.layer1.0.conv1.weight"
    where = tuple(int(v) for v in torch.nonzero(~mask[name])[0])
    with torch.no_grad():
        model.state_dict()[name][where] = 0.3  # a pruned weight that grew back
    backbone = export_backbone(model, tmp_path / "backbone.onnx", image_size=SIZE)
    body = {n: m for n, m in mask.items() if n.startswith("backbone.")}
    result = verify_zeros(backbone, model, body)
    assert not result["passed"] and result["failed"] == [name]
    with pytest.raises(VerificationError):
        _export(model, mask, tmp_path / "run")
