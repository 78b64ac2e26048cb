"""Shared fixtures: the tiny-model overrides that turn any shipped recipe into a seconds-long run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64",
    "data.synthetic.image_size=64", "data.synthetic.train_images=16", "data.synthetic.val_images=6",
    "train.iterations=6", "train.batch_size=2", "train.warmup_iters=2", "train.lr_steps=[5it]",
    "lottery.rounds=1", "lottery.rewind=2it",
]
NO_STAGES = ["export.enabled=false", "evaluate.enabled=false", "bench.enabled=false"]


def subprocess_env() -> dict[str, str]:
    """Environment for a `python -m compress` child: one thread, this checkout importable."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def set_args(overrides: list[str]) -> list[str]:
    out: list[str] = []
    for item in overrides:
        out += ["--set", item]
    return out


# One intra-op thread for every test, fixtures included: results then repeat across processes
# (the summation order of a 2-thread reduction differs from a 1-thread one).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lottery_run(tmp_path_factory) -> Path:
    """A finished tiny 2-round Mask R-CNN run (lottery only, no export/eval/bench)."""
    from compress.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    code = main(["-q", "run", str(ROOT / "recipes" / "maskrcnn_lth.yaml"), "--smoke", "--out", str(out),
                 *set_args(TINY + NO_STAGES)])
    assert code == 0
    return out
