"""Recipe overrides that turn any shipped recipe into a seconds-long run, and the child-process
environment of the subprocess tests."""
from __future__ import annotations

import os
from pathlib import Path

from compress.models.heads import HeadConfig

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64",
    "data.synthetic.image_size=64", "data.synthetic.train_images=16", "data.synthetic.val_images=6",
    "train.iterations=6", "train.batch_size=2", "train.warmup_iters=2", "train.lr_steps=[5it]",
    "lottery.rounds=1", "lottery.rewind=2it",
]
NO_STAGES = ["export.enabled=false", "evaluate.enabled=false", "bench.enabled=false"]


def subprocess_env() -> dict[str, str]:
    """Environment for a `python -m compress` child: one thread, this checkout importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def set_args(overrides: list[str]) -> list[str]:
    out: list[str] = []
    for item in overrides:
        out += ["--set", item]
    return out


# The smoke profile's lightened heads (recipes/maskrcnn_lth.yaml `smoke:`), keypoint head lightened alike.
LIGHT_HEADS = HeadConfig(
    fpn_channels=64, rpn_pre_nms_top_n_train=600, rpn_pre_nms_top_n_test=600,
    rpn_post_nms_top_n_train=300, rpn_post_nms_top_n_test=300, box_batch_size_per_image=64,
    representation_size=256, mask_head_layers=2, mask_head_channels=64,
    keypoint_head_layers=2, keypoint_head_channels=64,
)

# A lightened tiny Mask R-CNN for the lottery tests that train several rounds in-process.
TINY_LOTTERY = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64",
    "data.synthetic.image_size=64", "data.synthetic.train_images=8",
    "data.synthetic.val_images=4", "train.iterations=8", "train.batch_size=2",
    "lottery.rewind=2it", "train.lr_steps=[6it]", "train.warmup_iters=2",
    "model.heads.fpn_channels=16", "model.heads.representation_size=32",
    "model.heads.mask_head_channels=8", "model.heads.box_detections_per_img=10",
    "model.heads.rpn_pre_nms_top_n_train=100", "model.heads.rpn_post_nms_top_n_train=50",
    "model.heads.rpn_pre_nms_top_n_test=50", "model.heads.rpn_post_nms_top_n_test=20",
    "model.heads.box_batch_size_per_image=16", "evaluate.max_images=2",
]
