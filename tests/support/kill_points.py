"""The stages of one tiny `compress run` as milestones on its run folder, and a child process that
SIGKILLs itself at a chosen one (the kill-point test).

A milestone is a state of the run folder (a file exists, a metrics-log line was written). The
segment named on a milestone runs from it to the next one. `child_command(out, index, ...)` runs
the real CLI with two hooks: just before every file rename (`os.replace`: every atomic write, the
ONNX export) and before every metrics-log append, it checks whether milestone `index` holds; the
first time it does, the process SIGKILLs itself there. Every milestone is reached by a rename or
an append (or a folder created just after one), so the kill lands inside segment `index` every
time, a written temp file left behind (the resume must remove it), not at the mercy of a poller.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

EPOCH_ITERS = 4  # the kill test's 8 images at batch 2


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


# Milestones in the order a run reaches them; `True` marks the segments the test kills in.
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
TARGETS = [index for index, (_, _, aimed) in enumerate(MILESTONES) if aimed]


def segment(out: Path) -> int:
    """Index of the segment the run folder is in: the last milestone before the first missing."""
    for index, (_, reached, _) in enumerate(MILESTONES):
        if not reached(out):
            return index - 1
    return len(MILESTONES) - 1


# The child: the real CLI, with the rename and log-append hooks described above.
CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from support.kill_points import MILESTONES
from compress.core.folders import MetricsLog

out, reached = Path(sys.argv[1]), MILESTONES[int(sys.argv[2])][1]

def kill_if_reached():
    if reached(out):
        os.kill(os.getpid(), signal.SIGKILL)

real_replace, real_append = os.replace, MetricsLog.__call__

def replace(*args, **kwargs):
    kill_if_reached()
    return real_replace(*args, **kwargs)

def append(self, record):
    kill_if_reached()
    return real_append(self, record)

os.replace, MetricsLog.__call__ = replace, append
from compress.cli import main
sys.exit(main(sys.argv[3:]))
"""


def child_command(out: Path, index: int, cli_args: list[str]) -> list[str]:
    """The command of a child that runs `compress CLI_ARGS` and SIGKILLs itself in segment
    `index` of the run folder `out`."""
    tests = str(Path(__file__).resolve().parents[1])
    return [sys.executable, "-c", CHILD.format(tests=tests), str(out), str(index), *cli_args]
