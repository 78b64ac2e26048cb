"""SIGKILL a tiny `compress run` while a control trains and continue it with `--resume`.

One uninterrupted reference run (started first, in parallel); one run SIGKILLed from outside
while round 1's `random_mask` control trains its second epoch (its first checkpointed in its own
last.pt), then resumed to the end. Every control's mask, metrics and final weights, the rounds and
the metrics log must equal the reference bit for bit.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from support.kill_resume import kill_then_resume, log_records, run_command
from support.recipes import subprocess_env

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "maskrcnn_lth.yaml"
REWIND_IT = 2
SETS = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64",
    "data.synthetic.image_size=64", "data.synthetic.train_images=8",
    "data.synthetic.val_images=4", "train.iterations=8", "train.batch_size=2",
    "lottery.rounds=1", f"lottery.rewind={REWIND_IT}it", "train.lr_steps=[6it]",
    "train.warmup_iters=2", "model.heads.fpn_channels=16", "model.heads.representation_size=32",
    "model.heads.mask_head_channels=8", "model.heads.box_detections_per_img=10",
    "model.heads.rpn_pre_nms_top_n_train=100", "model.heads.rpn_post_nms_top_n_train=50",
    "model.heads.rpn_pre_nms_top_n_test=50", "model.heads.rpn_post_nms_top_n_test=20",
    "model.heads.box_batch_size_per_image=16", "evaluate.max_images=2",
    "lottery.controls=[reinit,random_mask,rewind_to_init]", "lottery.control_rounds=[1]",
    "export.enabled=false", "evaluate.enabled=false", "bench.enabled=false",
]  # 8 images at batch 2: 4 iterations an epoch, 2 epochs a round
CONTROLS = ("reinit", "random_mask", "rewind_to_init")
TIMEOUT_S = 600  # generous: the machine is shared


command = run_command(RECIPE, SETS)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def control_epoch_saved(out: Path) -> bool:
    """The random_mask control checkpointed an epoch past its start (the rewind iteration)."""
    path = out / "rounds" / "round_1" / "controls" / "random_mask" / "last.pt"
    try:
        return path.is_file() and int(load(path)["iteration"]) > REWIND_IT
    except (OSError, RuntimeError, KeyError, EOFError):
        return False


def control_unfinished(run: Path) -> None:
    assert not (run / "rounds" / "round_1" / "controls" / "random_mask" / "metrics.json").exists()


def test_sigkill_during_a_control_then_resume(tmp_path):
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    env = subprocess_env()
    kill_then_resume(command, out, ref_out, cwd=REPO, env=env, ready=control_epoch_saved,
                     timeout_s=TIMEOUT_S, after_kill=control_unfinished)

    for name in CONTROLS:
        a = ref_out / "rounds" / "round_1" / "controls" / name
        b = out / "rounds" / "round_1" / "controls" / name
        assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
        for file in ("checkpoint.pt", "mask.pt"):
            x, y = load(a / file), load(b / file)
            x, y = x.get("model", x), y.get("model", y)
            assert set(x) == set(y)
            assert all(torch.equal(x[k], y[k]) for k in x), f"{name}/{file} differs after resume"
    assert log_records(ref_out) == log_records(out)
    assert json.loads((ref_out / "summary.json").read_text())["rounds"] == \
        json.loads((out / "summary.json").read_text())["rounds"]
