"""SIGKILL a tiny `compress run` and continue it with `--resume` (support/kill_resume.py).

One uninterrupted reference run; one run killed in round 2's prune/rewind step (between rounds 1
and 2: the child SIGKILLs itself right after the rewind, so the kill lands there every time), then
resumed and SIGKILLed again from outside while round 2 trains its second epoch (the first one
checkpointed in last.pt), then resumed to the end. Every round's mask, metrics and final weights
and the ticket must equal the reference bit for bit, and the metrics log must hold each step once.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from support.kill_resume import kill_then_resume, log_records
from support.recipes import NO_STAGES, TINY_LOTTERY, set_args, subprocess_env

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "maskrcnn_lth.yaml"
ROUNDS = 2
REWIND_IT = 2
ITERS_PER_EPOCH = 4  # 8 images, batch 2; 8 iterations = 2 epochs per round
SETS = TINY_LOTTERY + [f"lottery.rounds={ROUNDS}"] + NO_STAGES  # rewind 2it, 8 iterations
# The child of the between-rounds kill: the real CLI, with `rewind` wrapped so that the process
# SIGKILLs itself right after round 2's prune and rewind, before round 2 trains.
KILL_AFTER_REWIND = """
import os, signal, sys
import compress.lottery.runner as lottery
real, calls = lottery.rewind, []
def rewind(*args, **kwargs):
    real(*args, **kwargs)
    calls.append(1)
    if len(calls) == {round}:
        os.kill(os.getpid(), signal.SIGKILL)
lottery.rewind = rewind
from compress.cli import main
sys.exit(main(sys.argv[1:]))
"""
TIMEOUT_S = 300  # generous: the machine is shared


def cli_args(out: Path, resume: bool = False) -> list[str]:
    args = ["--quiet", "run", str(RECIPE), "--smoke", "--out", str(out), *set_args(SETS)]
    return args + (["--resume"] if resume else [])


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def round2_epoch_saved(out: Path) -> bool:
    """True once round 2 has checkpointed its first epoch (last.pt past the rewind iteration)."""
    path = out / "rounds" / "round_2" / "last.pt"
    try:
        return path.is_file() and int(load(path)["iteration"]) > REWIND_IT
    except (OSError, RuntimeError, KeyError, EOFError):  # replaced while reading: try again
        return False


def killed_while_round_2_trained(out: Path) -> None:
    assert int(load(out / "rounds/round_2/last.pt")["iteration"]) == ITERS_PER_EPOCH
    assert not (out / "rounds/round_2/metrics.json").exists()


def test_sigkill_between_rounds_and_in_round_2_then_resume(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_REWIND.format(round=ROUNDS),
                             *cli_args(out)], cwd=REPO, env=subprocess_env(), capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "rounds/round_1/metrics.json").is_file()
    assert not (out / "rounds/round_2/last.pt").exists()  # killed before round 2 trained

    def command(folder: Path, resume: bool = False) -> list[str]:
        """The reference runs from the start; the killed folder always continues (--resume):
        killed again from outside in round 2's second epoch, then resumed to the end."""
        return [sys.executable, "-m", "compress", *cli_args(folder, resume or folder == out)]

    kill_then_resume(command, out, reference, cwd=REPO, env=subprocess_env(),
                     ready=round2_epoch_saved, timeout_s=TIMEOUT_S, poll_s=0.02,
                     after_kill=killed_while_round_2_trained)
    assert_same_runs(out, reference)


def assert_same_runs(out: Path, reference: Path) -> None:
    for k in range(ROUNDS + 1):
        ours, ref = out / f"rounds/round_{k}", reference / f"rounds/round_{k}"
        mask, ref_mask = load(ours / "mask.pt"), load(ref / "mask.pt")
        assert list(mask) == list(ref_mask)
        assert all(torch.equal(mask[n], ref_mask[n]) for n in mask), f"round {k} mask differs"
        assert json.loads((ours / "metrics.json").read_text()) == \
            json.loads((ref / "metrics.json").read_text()), f"round {k} metrics differ"
        weights, ref_weights = load(ours / "checkpoint.pt")["model"], load(ref / "checkpoint.pt")["model"]
        assert all(torch.equal(weights[n], ref_weights[n]) for n in ref_weights)
        assert not (ours / "last.pt").exists()
    ticket, ref_ticket = load(out / "ticket.pt"), load(reference / "ticket.pt")
    assert all(torch.equal(ticket["mask"][n], ref_ticket["mask"][n]) for n in ref_ticket["mask"])
    assert log_records(out) == log_records(reference)  # every step logged once
