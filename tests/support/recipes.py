"""Recipe overrides that turn any shipped recipe into a seconds-long run, and the child-process
environment of the subprocess tests."""
from __future__ import annotations

import os
from pathlib import Path

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
