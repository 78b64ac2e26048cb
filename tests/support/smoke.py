"""One real tiny `compress run --smoke` per test session, shared by the tests that read a run folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from compress.cli import main

SMOKE_ARGS = ["--set", "model.backbone=tiny", "--set", "model.min_size=64", "--set", "model.max_size=64",
              "--set", "data.synthetic.image_size=64", "--set", "data.synthetic.train_images=16",
              "--set", "data.synthetic.val_images=6", "--set", "train.iterations=6",
              "--set", "train.batch_size=2", "--set", "lottery.rounds=1", "--set", "lottery.rewind=2it",
              "--set", "train.lr_steps=[5it]", "--set", "train.warmup_iters=2",
              "--set", "bench.iterations=3", "--set", "bench.warmup=1"]

def smoke_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `compress run --smoke` per test session (shared by test_report and test_predict)."""
    root = tmp_path_factory.getbasetemp() / "smoke_run"
    if not (root / "summary.json").is_file() or "bench" not in json.loads((root / "summary.json").read_text()):
        torch.set_num_threads(1)
        shutil.rmtree(root, ignore_errors=True)
        code = main(["-q", "run", "recipes/maskrcnn_lth.yaml", "--smoke", "--out", str(root), *SMOKE_ARGS])
        assert code == 0
    return root
