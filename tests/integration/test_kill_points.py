"""SIGKILL one tiny smoke run at every stage of `compress run` and resume it each time.

One chain of kill/resume steps walks through a whole 2-round run with every stage on. Each step
runs `compress run ... --resume` in a child that SIGKILLs itself at the first file rename or
metrics-log append after the next target milestone is reached (tests/support/kill_points.py), so
it lands in that segment every time, a temp file half-committed. 13 targets: round 0 mid-epoch and
after its epoch checkpoint, both prune/rewind steps, round 1 mid-epoch, round 2 after its epoch
checkpoint, ticket writing, two parts of the export, evaluation on torch and on ONNX Runtime,
bench, report. After each kill the folder state is classified (the segment between the last
milestone reached and the next one) and must be the one aimed at: every point named is hit.
After every kill summary.json and every JSON file must parse, and the temp files a previous kill
left must be gone (none may remain in the finished run). The finished run must equal an
uninterrupted run with the same seed (started in parallel): every round's mask, metrics and
weights bit for bit, the ticket, the training log, and each engine's evaluation metrics and
predictions.
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

from support.kill_points import EPOCH_ITERS, MILESTONES, TARGETS, child_command, records, segment
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
STEP_TIMEOUT_S = 120


def command(out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "compress", *cli_args(out, resume)]


def cli_args(out: Path, resume: bool) -> list[str]:
    args = ["--quiet", "run", str(RECIPE), "--smoke", "--out", str(out)]
    for item in SETS:
        args += ["--set", item]
    return args + (["--resume"] if resume else [])


def kill_in(out: Path, resume: bool, target: int, log: Any) -> int:
    """Run one step that SIGKILLs itself in segment `target`; return the segment the folder shows."""
    proc = subprocess.run(child_command(out, target, cli_args(out, resume)), cwd=REPO,
                          env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=log,
                          timeout=STEP_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL, \
        f"the step aimed at '{MILESTONES[target][0]}' ended with exit {proc.returncode}"
    return segment(out)


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
    """Kill in each targeted segment in turn, resuming after each kill; return the points hit."""
    hits: list[str] = []
    started_s = time.monotonic()
    left: set[str] = set()
    for number, target in enumerate(TARGETS):
        current = kill_in(out, number > 0, target, log)
        hits.append(MILESTONES[current][0])
        assert current == target, f"aimed at '{MILESTONES[target][0]}', hit '{hits[-1]}'"
        if "after the epoch-1 checkpoint" in hits[-1]:  # resumes from last.pt, not the round start
            last = load(out / f"rounds/round_{hits[-1].split()[1]}/last.pt")
            assert int(last["iteration"]) == EPOCH_ITERS
        print(f"kill {len(hits)} at {time.monotonic() - started_s:.1f} s: {hits[-1]}", flush=True)
        left = check_after_kill(out, left)
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
    # `warnings` holds timing checks (under load, deployment slower than ORT): they depend on
    # what else ran during each bench, not on the kills
    assert set(summary) - {"warnings"} == set(ref_summary) - {"warnings"}
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
    assert hits == [MILESTONES[i][0] for i in TARGETS]  # every point named, each hit once
    assert_same_runs(out, ref)
