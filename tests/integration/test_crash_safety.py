"""A partial or corrupt checkpoint is detected and the work restarts from the last good state,
ending with the same result as an undisturbed run."""
from __future__ import annotations

import json
import shutil

import torch

from compress.core.checkpoint import load_checkpoint
from compress.cli import main
from compress.lottery.masks import load_mask
from support.recipes import NO_STAGES, ROOT, TINY, set_args

ARGS = ["-q", "run", str(ROOT / "recipes" / "maskrcnn_lth.yaml"), "--smoke", *set_args(TINY + NO_STAGES)]


def _same_round(a, b, k):
    ra, rb = a / "rounds" / f"round_{k}", b / "rounds" / f"round_{k}"
    ma, mb = load_mask(ra / "mask.pt"), load_mask(rb / "mask.pt")
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    wa, wb = load_checkpoint(ra / "checkpoint.pt")["model"], load_checkpoint(rb / "checkpoint.pt")["model"]
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    assert json.loads((ra / "metrics.json").read_text()) == json.loads((rb / "metrics.json").read_text())


def _records(run, k):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines if json.loads(x).get("round") == k]
    return [{key: v for key, v in r.items() if key != "seconds_per_iter"} for r in records]


def test_truncated_round_checkpoint_reruns_that_round(tiny_lottery_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_lottery_run, run)
    ckpt = run / "rounds" / "round_1" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert main([*ARGS, "--out", str(run), "--resume"]) == 0
    _same_round(tiny_lottery_run, run, 1)
    assert _records(run, 1) == _records(tiny_lottery_run, 1)  # no duplicated log lines


def test_corrupt_epoch_checkpoint_restarts_the_round(tiny_lottery_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_lottery_run, run)
    round_dir = run / "rounds" / "round_1"
    (round_dir / "metrics.json").unlink()
    good = load_checkpoint(round_dir / "checkpoint.pt")
    payload = dict(good)
    payload["iteration"] = 4  # content no longer matches its stored checksum
    torch.save(payload, round_dir / "last.pt")
    assert main([*ARGS, "--out", str(run), "--resume"]) == 0
    assert (round_dir / "last.pt.corrupt").is_file() and not (round_dir / "last.pt").exists()
    _same_round(tiny_lottery_run, run, 1)
    assert _records(run, 1) == _records(tiny_lottery_run, 1)
