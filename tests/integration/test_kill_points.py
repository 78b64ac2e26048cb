"""SIGKILL one tiny smoke run at every stage of `compress run` and resume it each time.

One chain of kill/resume steps walks through a whole 2-round run with every stage on: each step
starts `compress run ... --resume`, polls the run folder every few milliseconds and SIGKILLs the
process as soon as the next target point is reached (13 targets: round 0 mid-epoch and after
its epoch checkpoint, both prune/rewind steps, round 1 mid-epoch, round 2 after its epoch
checkpoint, ticket writing, two parts of the export, evaluation on torch and on ONNX Runtime,
bench, report). After each kill the folder state is classified (the segment between the last
milestone reached and the next one): that is the point actually hit, and at least 10 distinct
ones must be. After every kill summary.json and every JSON file must parse, and the temp files
a previous kill left must be gone (none may remain in the finished run). The finished run must equal an uninterrupted run
with the same seed (started in parallel): every round's mask, metrics and weights bit for bit,
the ticket, the training log, and each engine's evaluation metrics and predictions.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from support.recipes import subprocess_env

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "maskrcnn_lth.yaml"
ROUNDS = 2
SETS = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64",
    "data.synthetic.image_size=64", "data.synthetic.train_images=8", "data.synthetic.val_images=4",
    "train.iterations=8", "train.batch_size=2", "train.warmup_iters=2", "train.lr_steps=[6it]",
    "train.log_every=1", f"lottery.rounds={ROUNDS}", "lottery.rewind=2it",
    "model.heads.fpn_channels=16", "model.heads.representation_size=32",
    "model.heads.mask_head_channels=8", "model.heads.box_detections_per_img=10",
    "model.heads.rpn_pre_nms_top_n_train=100", "model.heads.rpn_post_nms_top_n_train=50",
    "model.heads.rpn_pre_nms_top_n_test=50", "model.heads.rpn_post_nms_top_n_test=20",
    "model.heads.box_batch_size_per_image=16",
    "evaluate.max_images=2", "evaluate.engines=[torch,onnxruntime]", "evaluate.tide=true",
    "bench.iterations=2", "bench.warmup=0", "bench.engines=[onnxruntime]",
]  # 8 images at batch 2: 4 iterations an epoch, 2 epochs a round
EPOCH_ITERS = 4
POLL_S = 0.005
STEP_TIMEOUT_S = 120
MIN_POINTS = 10


def records(out: Path) -> list[dict[str, Any]]:
    """The metrics log; a line being appended at the moment of reading is ignored."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return parsed


def logged(round_index: int, epoch: int | None = None,
           past: int = 0) -> Callable[[Path], bool]:
    """A training step of the round past iteration `past` was logged (epoch None), or the round's
    epoch-`epoch` validation. A step past an epoch end is logged after that epoch's last.pt."""
    def reached(out: Path) -> bool:
        for rec in records(out):
            if rec.get("round") != round_index:
                continue
            if epoch is None and "loss" in rec and rec["iteration"] > past:
                return True
            if epoch is not None and "val_loss" in rec and rec.get("epoch") == epoch:
                return True
        return False
    return reached


def exists(relative: str) -> Callable[[Path], bool]:
    return lambda out: (out / relative).exists()


def started(round_index: int) -> Callable[[Path], bool]:
    """Round k began training (its last.pt is written once prune + rewind are done)."""
    base = f"rounds/round_{round_index}"
    return lambda out: (out / base / "last.pt").exists() or (out / base / "metrics.json").exists()


def in_summary(key: str) -> Callable[[Path], bool]:
    def reached(out: Path) -> bool:
        try:
            return key in json.loads((out / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            return False
    return reached


# Milestones in the order a run reaches them. The segment named on a line runs from its milestone
# to the next one; `True` marks the segments the chain aims a kill at.
MILESTONES: list[tuple[str, Callable[[Path], bool], bool]] = [
    ("round 0 mid-epoch 1", logged(0), True),
    ("round 0 epoch 2, after the epoch-1 checkpoint", logged(0, past=EPOCH_ITERS), True),
    ("round 0 final evaluation", logged(0, epoch=2), False),
    ("prune + rewind for round 1", exists("rounds/round_0/metrics.json"), True),
    ("round 1 start", started(1), False),
    ("round 1 mid-epoch 1", logged(1), True),
    ("round 1 epoch 2, after the epoch-1 checkpoint", logged(1, past=EPOCH_ITERS), False),
    ("prune + rewind for round 2", exists("rounds/round_1/metrics.json"), True),
    ("round 2 start", started(2), False),
    ("round 2 mid-epoch 1", logged(2), False),
    ("round 2 epoch 2, after the epoch-1 checkpoint", logged(2, past=EPOCH_ITERS), True),
    ("round 2 final evaluation", logged(2, epoch=2), False),
    ("ticket writing", exists("rounds/round_2/metrics.json"), True),
    ("export: model.onnx", exists("ticket.pt"), True),
    ("export: backbone + verify", exists("export/model.onnx"), True),
    ("export: sparse + compact + sizes", exists("export/verify.json"), False),
    ("evaluate: torch inference", exists("export/sizes.json"), False),
    ("evaluate: torch TIDE + AP deltas", exists("eval/torch/metrics.json"), True),
    ("evaluate: onnxruntime", exists("eval/onnxruntime"), True),
    ("bench: MACs", in_summary("eval"), False),
    ("bench: latency", exists("bench/macs.json"), True),
    ("report", exists("bench/bench.json"), True),
    ("finished", exists("report.md"), False),
]


def segment(out: Path) -> int:
    """Index of the segment the run folder is in: the last milestone before the first missing."""
    for index, (_, reached, _) in enumerate(MILESTONES):
        if not reached(out):
            return index - 1
    return len(MILESTONES) - 1


def command(out: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "compress", "--quiet", "run", str(RECIPE), "--smoke",
            "--out", str(out)]
    for item in SETS:
        args += ["--set", item]
    return args + (["--resume"] if resume else [])


def kill_at(out: Path, resume: bool, target: Callable[[Path], bool], log: Any) -> bool:
    """Run one step; SIGKILL it once `target` holds. False: it finished before that."""
    proc = subprocess.Popen(command(out, resume), cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + STEP_TIMEOUT_S
    try:
        while proc.poll() is None and not target(out):
            assert time.monotonic() < deadline, "a kill/resume step never reached its point"
            time.sleep(POLL_S)
        if proc.poll() is not None:
            assert proc.returncode == 0, f"a resumed step failed (exit {proc.returncode})"
            return False
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def temp_entries(out: Path) -> set[str]:
    """Atomic-write temp files and scratch folders (hidden names) anywhere in the run folder."""
    return {str(p.relative_to(out)) for p in out.rglob(".*")
            if p.name.endswith(".tmp") or p.name.startswith((".tide_", ".plot_"))}


def check_after_kill(out: Path, left_before: set[str]) -> set[str]:
    summary = json.loads((out / "summary.json").read_text())
    assert isinstance(summary, dict) and summary["recipe_hash"]
    for path in out.rglob("*.json"):  # atomic writes: no JSON file is ever half written
        if not any(part.startswith(".") for part in path.relative_to(out).parts):
            json.loads(path.read_text())  # (a scratch folder's files may be; it is removed)
    left = temp_entries(out)
    stale = left & left_before
    assert not stale, f"temp files left by an earlier kill survived a resume: {sorted(stale)}"
    return left


def kill_chain(out: Path, log: Any) -> list[str]:
    """Kill at each targeted segment in turn, resuming after each kill; return the points hit."""
    hits: list[str] = []
    started_s = time.monotonic()
    left: set[str] = set()
    current, resume = -1, False
    while True:
        targets = [i for i in range(current + 1, len(MILESTONES)) if MILESTONES[i][2]]
        if not targets:
            break
        if not kill_at(out, resume, MILESTONES[targets[0]][1], log):
            current = len(MILESTONES) - 1  # it ran to the end before the point
            break
        resume = True
        current = segment(out)
        assert 0 <= current < len(MILESTONES) - 1, "killed after the run had finished"
        hits.append(MILESTONES[current][0])
        if "after the epoch-1 checkpoint" in hits[-1]:  # resumes from last.pt, not the round start
            last = load(out / f"rounds/round_{hits[-1].split()[1]}/last.pt")
            assert int(last["iteration"]) == EPOCH_ITERS
        print(f"kill {len(hits)} at {time.monotonic() - started_s:.1f} s: {hits[-1]}", flush=True)
        left = check_after_kill(out, left)
    if current < len(MILESTONES) - 1:
        done = subprocess.run(command(out, resume=True), cwd=REPO, env=subprocess_env(), text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=STEP_TIMEOUT_S)
        assert done.returncode == 0, done.stderr[-3000:]
    assert not temp_entries(out), f"stray temp files in the finished run: {temp_entries(out)}"
    return hits


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def same_tensors(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], what: str) -> None:
    assert list(ours) == list(ref), f"{what}: different keys"
    differ = [n for n in ref if not torch.equal(ours[n], ref[n])]
    assert not differ, f"{what} differs in {differ[:5]}"


def log_records(out: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in rec.items() if k != "seconds_per_iter"} for rec in records(out)]


def assert_same_runs(out: Path, ref: Path) -> None:
    for k in range(ROUNDS + 1):
        ours, theirs = out / f"rounds/round_{k}", ref / f"rounds/round_{k}"
        same_tensors(load(ours / "mask.pt"), load(theirs / "mask.pt"), f"round {k} mask")
        assert read_json(ours / "metrics.json") == read_json(theirs / "metrics.json"), \
            f"round {k} metrics differ"
        same_tensors(load(ours / "checkpoint.pt")["model"], load(theirs / "checkpoint.pt")["model"],
                     f"round {k} weights")
        assert not (ours / "last.pt").exists()
    ticket, ref_ticket = load(out / "ticket.pt"), load(ref / "ticket.pt")
    same_tensors(ticket["mask"], ref_ticket["mask"], "ticket mask")
    same_tensors(ticket["model"], ref_ticket["model"], "ticket weights")
    same_tensors(ticket["mask"], load(out / f"rounds/round_{ROUNDS}/mask.pt"), "ticket vs round mask")
    assert log_records(out) == log_records(ref), "the training log differs (or holds a step twice)"
    for engine in ("torch", "onnxruntime"):
        for name in ("metrics.json", "results.json"):
            assert read_json(out / "eval" / engine / name) == read_json(ref / "eval" / engine / name), \
                f"eval/{engine}/{name} differs"
    summary, ref_summary = read_json(out / "summary.json"), read_json(ref / "summary.json")
    assert summary["rounds"] == ref_summary["rounds"]
    assert summary["eval"] == ref_summary["eval"]
    assert set(summary) == set(ref_summary)
    assert (out / "report.md").is_file() and (out / "report.html").is_file()


def test_sigkill_at_every_stage_then_resume_matches_uninterrupted(tmp_path):
    started_s = time.monotonic()
    out, ref = tmp_path / "run", tmp_path / "reference"
    with open(tmp_path / "reference.err", "w+", encoding="utf-8") as ref_err, \
            open(tmp_path / "chain.err", "w+", encoding="utf-8") as chain_err:
        ref_proc = subprocess.Popen(command(ref, resume=False), cwd=REPO, env=subprocess_env(),
                                    stdout=subprocess.DEVNULL, stderr=ref_err)
        try:
            hits = kill_chain(out, chain_err)
            ref_proc.wait(timeout=STEP_TIMEOUT_S)
        finally:
            if ref_proc.poll() is None:
                ref_proc.kill()
                ref_proc.wait()
        ref_err.seek(0)
        assert ref_proc.returncode == 0, ref_err.read()[-3000:]
    record = {"hits": hits, "seconds": round(time.monotonic() - started_s, 1)}
    (tmp_path / "kill_points.json").write_text(json.dumps(record, indent=2))
    print(f"\nkill points hit ({len(hits)}, {record['seconds']} s): " + "; ".join(hits))
    assert len(set(hits)) >= MIN_POINTS, f"only {len(set(hits))} distinct kill points hit: {hits}"
    assert_same_runs(out, ref)
