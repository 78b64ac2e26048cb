"""A tiny Pascal VOC run reports the VOC metric (per class and mean AP50, VOC07 11-point and area)
beside COCO-style AP: in every round's metrics, eval/torch/metrics.json, summary.json, and from
`compress evaluate MODEL --data VOCROOT`; the figures equal the VOC metric of the written results."""
from __future__ import annotations

import json

from support.recipes import ROOT, set_args

from compress.cli import main
from compress.data.voc import VOC_CLASSES, voc_to_coco, write_tiny_voc
from compress.evaluate.metrics.voc import voc_ap

SETTINGS = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64", "data.num_workers=0",
    "data.train_split=train", "data.val_split=val", "train.iterations=4", "train.batch_size=2",
    "train.warmup_iters=1", "train.lr_steps=[3it]", "train.amp=false", "lottery.rounds=1",
    "lottery.rewind=1it", "export.enabled=false", "bench.enabled=false",
    "evaluate.engines=[torch]", "evaluate.tide=false",
    "model.heads.fpn_channels=16", "model.heads.representation_size=32",
]


def test_voc_run_and_evaluate_report_the_voc_metric(tmp_path):
    voc = write_tiny_voc(tmp_path / "VOC2012", images=8, seed=2, image_size=64)
    out = tmp_path / "run"
    args = ["-q", "run", str(ROOT / "recipes" / "fasterrcnn_voc_lth.yaml"), "--out", str(out),
            *set_args([f"data.root={voc}", *SETTINGS])]
    assert main(args) == 0
    for k in (0, 1):
        metrics = json.loads((out / "rounds" / f"round_{k}" / "metrics.json").read_text())["metrics"]
        assert {"bbox_mAP", "voc07_mAP50", "voc_area_mAP50"} <= set(metrics)
        assert set(metrics["voc_per_class"]) == set(VOC_CLASSES)
    full = json.loads((out / "eval" / "torch" / "metrics.json").read_text())
    results = json.loads((out / "eval" / "torch" / "results.json").read_text())
    expected = voc_ap(voc_to_coco(voc, "val"), results)
    assert full["voc"] == json.loads(json.dumps(expected))
    assert "bbox" in full and full["voc"]["rule"].startswith("classic voc_eval")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval"]["torch"]["voc07_mAP50"] == expected["voc07_mAP50"]
    assert summary["rounds"][-1]["metrics"]["voc_area_mAP50"] == \
        json.loads((out / "rounds" / "round_1" / "metrics.json").read_text())["metrics"]["voc_area_mAP50"]

    again = tmp_path / "again"
    assert main(["-q", "evaluate", str(out / "ticket.pt"), "--data", str(voc), "--engine", "torch",
                 "--out", str(again)]) == 0
    metrics = json.loads((again / "metrics.json").read_text())
    assert metrics["voc"]["voc07_mAP50"] == full["voc"]["voc07_mAP50"]
    assert metrics["voc"]["per_class"] == full["voc"]["per_class"]
