"""SIGKILL a tiny `compress run` and continue it with `--resume`.

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
import time
from pathlib import Path
from typing import Any

import torch

from support.recipes import subprocess_env

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "maskrcnn_lth.yaml"
ROUNDS = 2
REWIND_IT = 2
ITERS_PER_EPOCH = 4  # 8 images, batch 2; 8 iterations = 2 epochs per round
SETS = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64",
    "data.synthetic.image_size=64", "data.synthetic.train_images=8",
    "data.synthetic.val_images=4", "train.iterations=8", "train.batch_size=2",
    f"lottery.rounds={ROUNDS}", f"lottery.rewind={REWIND_IT}it", "train.lr_steps=[6it]",
    "train.warmup_iters=2", "model.heads.fpn_channels=16", "model.heads.representation_size=32",
    "model.heads.mask_head_channels=8", "model.heads.box_detections_per_img=10",
    "model.heads.rpn_pre_nms_top_n_train=100", "model.heads.rpn_post_nms_top_n_train=50",
    "model.heads.rpn_pre_nms_top_n_test=50", "model.heads.rpn_post_nms_top_n_test=20",
    "model.heads.box_batch_size_per_image=16", "evaluate.max_images=2",
    "export.enabled=false", "evaluate.enabled=false", "bench.enabled=false",
]
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
TIMEOUT_S = 120


def command(out: Path, resume: bool = False) -> list[str]:
    args = ["--quiet", "run", str(RECIPE), "--smoke", "--out", str(out)]
    for item in SETS:
        args += ["--set", item]
    return args + (["--resume"] if resume else [])


def run_cli(args: list[str], prelude: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(prelude or ["-m", "compress"]), *args]
    return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def kill_when(args: list[str], ready, poll_s: float = 0.02) -> int:
    """Start the CLI, SIGKILL it once `ready()` is true; return its exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "compress", *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None and not ready():
            if time.monotonic() > deadline:
                raise TimeoutError("the run never reached the kill point")
            time.sleep(poll_s)
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def log_records(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds_per_iter"} for line in lines]


def round2_epoch_saved(out: Path):
    """True once round 2 has checkpointed its first epoch (last.pt past the rewind iteration)."""
    path = out / "rounds" / "round_2" / "last.pt"

    def ready() -> bool:
        try:
            return path.is_file() and int(load(path)["iteration"]) > REWIND_IT
        except (OSError, RuntimeError, KeyError):  # replaced while reading: try again
            return False
    return ready


def start_reference(out: Path, stderr: Any) -> subprocess.Popen:
    """The uninterrupted run, started first so it overlaps the interrupted one."""
    return subprocess.Popen([sys.executable, "-m", "compress", *command(out)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=stderr)


def test_sigkill_between_rounds_and_in_round_2_then_resume(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "run"
    with open(tmp_path / "reference.err", "w+", encoding="utf-8") as ref_err:
        ref_proc = start_reference(reference, ref_err)
        try:
            interrupt_and_resume(out)
            ref_proc.wait(timeout=TIMEOUT_S)
        finally:
            if ref_proc.poll() is None:
                ref_proc.kill()
                ref_proc.wait()
        ref_err.seek(0)
        assert ref_proc.returncode == 0, ref_err.read()[-2000:]
    assert_same_runs(out, reference)


def interrupt_and_resume(out: Path) -> None:
    killed = run_cli(command(out), ["-c", KILL_AFTER_REWIND.format(round=ROUNDS)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "rounds/round_1/metrics.json").is_file()
    assert not (out / "rounds/round_2/last.pt").exists()  # killed before round 2 trained

    status = kill_when(command(out, resume=True), round2_epoch_saved(out))
    assert status == -signal.SIGKILL
    assert int(load(out / "rounds/round_2/last.pt")["iteration"]) == ITERS_PER_EPOCH
    assert not (out / "rounds/round_2/metrics.json").exists()  # killed while round 2 trained

    done = run_cli(command(out, resume=True))
    assert done.returncode == 0, done.stderr[-2000:]


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
