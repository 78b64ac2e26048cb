"""SIGKILL a tiny gradual-pruning run driven by a SparseML recipe card mid-training (while the GMP
schedule is still pruning) and continue it with `--resume`: the weights, masks, metrics and log
must equal an uninterrupted run's bit for bit."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from support.kill_resume import kill_then_resume, log_records
from support.recipes import NO_STAGES, TINY, set_args, subprocess_env

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "maskrcnn_gmp_card.yaml"
EPOCH_ITERS = 8  # TINY: 16 images at batch 2
SETS = [o for o in TINY if not o.startswith("lottery.")] + NO_STAGES + [
    "train.log_every=1", "modifier_variables.num_epochs=2",
    "modifier_variables.pruning_start_epoch=0.5", "modifier_variables.pruning_update_frequency=0.25",
]  # 16 iterations; GMP prunes from iteration 4 to 10 (epoch 1.33), every 2 iterations
TIMEOUT_S = 600  # generous: the machine is shared


def command(out: Path, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "compress", "--quiet", "run", str(RECIPE), "--smoke", "--out",
            str(out), *set_args(SETS), *(["--resume"] if resume else [])]


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def in_second_epoch(out: Path) -> bool:
    """last.pt holds the end of epoch 1 and a step of epoch 2 (before the pruning ends) was logged."""
    try:
        saved = int(load(out / "rounds" / "round_0" / "last.pt")["iteration"]) == EPOCH_ITERS
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except (OSError, RuntimeError, KeyError, EOFError):
        return False
    steps = [json.loads(line).get("iteration", 0) for line in lines[:-1] if '"loss"' in line]
    return saved and any(EPOCH_ITERS < s < 11 for s in steps)


def test_gradual_card_kill_mid_pruning_then_resume_is_bit_exact(tmp_path):
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    env = subprocess_env()
    kill_then_resume(command, out, ref_out, cwd=REPO, env=env, ready=in_second_epoch,
                     timeout_s=TIMEOUT_S, poll_s=0.005)

    a, b = ref_out / "rounds" / "round_0", out / "rounds" / "round_0"
    x, y = load(a / "checkpoint.pt")["model"], load(b / "checkpoint.pt")["model"]
    assert set(x) == set(y)
    differ = [k for k in x if not torch.equal(x[k], y[k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:3]}"
    mx, my = load(a / "mask.pt"), load(b / "mask.pt")
    assert all(torch.equal(mx[k], my[k]) for k in mx)
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    assert log_records(ref_out) == log_records(out)
    assert json.loads((a / "metrics.json").read_text())["prunable_sparsity"] > 0.7
