"""`compress data synth --out D` (train and val splits), then `compress run` with `data.dataset:
coco, data.root: D` trains; a synthetic `data.root` naming a user's folder exits 2, untouched."""
from __future__ import annotations

import hashlib
import json

from support.recipes import ROOT, set_args

from compress.cli import main

SETTINGS = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64", "data.num_workers=0",
    "data.train_split=train", "data.val_split=val", "train.iterations=3", "train.batch_size=2",
    "train.warmup_iters=1", "train.lr_steps=[2it]", "train.amp=false", "lottery.rounds=1",
    "lottery.rewind=1it", "export.enabled=false", "bench.enabled=false",
    "evaluate.engines=[torch]", "evaluate.tide=false",
    "model.heads.fpn_channels=16", "model.heads.representation_size=32",
    "model.heads.mask_head_channels=8",
]


def test_data_synth_output_trains_as_a_coco_root(tmp_path):
    data = tmp_path / "D"
    for split, images in (("train", 6), ("val", 2)):
        assert main(["-q", "data", "synth", "--out", str(data), "--split", split, "--images",
                     str(images), "--image-size", "64"]) == 0
    out = tmp_path / "run"
    args = ["-q", "run", str(ROOT / "recipes" / "maskrcnn_lth.yaml"), "--out", str(out),
            *set_args(["data.dataset=coco", f"data.root={data}", *SETTINGS])]
    assert main(args) == 0
    metrics = json.loads((out / "rounds" / "round_1" / "metrics.json").read_text())["metrics"]
    assert "bbox_mAP" in metrics and "segm_mAP" in metrics
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in str(record) for record in losses)


def test_synthetic_root_at_a_users_folder_exits_2_and_leaves_it(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "000001.png").write_bytes(b"my photo")
    before = hashlib.sha256((mine / "train" / "000001.png").read_bytes()).hexdigest()
    out = tmp_path / "run"
    code = main(["-q", "run", str(ROOT / "recipes" / "maskrcnn_lth.yaml"), "--out", str(out),
                 *set_args(["data.dataset=synthetic", f"data.root={mine}", *SETTINGS])])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.root" in err[0] and "never written" in err[0]
    assert hashlib.sha256((mine / "train" / "000001.png").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in mine.rglob("*")) == ["000001.png", "train"]
    assert not (out / "recipe.yaml").exists()
