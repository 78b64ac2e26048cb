"""Kill a `compress run` child with SIGKILL once its run folder reaches a state, resume it, and
run the same command uninterrupted beside it as the reference."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_command(recipe: Path, sets: list[str]) -> Callable[..., list[str]]:
    """command(out, resume=False): `python -m compress --quiet run RECIPE --smoke --out OUT` with
    every `--set` of `sets` (and `--resume`)."""
    def command(out: Path, resume: bool = False) -> list[str]:
        args = [sys.executable, "-m", "compress", "--quiet", "run", str(recipe), "--smoke",
                "--out", str(out)]
        for item in sets:
            args += ["--set", item]
        return args + (["--resume"] if resume else [])
    return command


def kill_then_resume(command: Callable[..., list[str]], out: Path, ref_out: Path, *, cwd: Path,
                     env: dict[str, str], ready: Callable[[Path], bool], timeout_s: float,
                     poll_s: float = 0.01, after_kill: Callable[[Path], None] | None = None) -> None:
    """Start the reference and the run to kill; SIGKILL the latter when `ready(out)`; check the
    killed folder with `after_kill`; resume it; wait for both (each must exit 0)."""
    reference = subprocess.Popen(command(ref_out), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(command(out), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and not ready(out):
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(poll_s)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before the kill"
    finally:
        if proc.poll() is None:
            proc.kill()
    if after_kill is not None:
        after_kill(out)
    resumed = subprocess.run(command(out, resume=True), cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=timeout_s)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert reference.wait(timeout=timeout_s) == 0, reference.stderr.read()[-2000:]


def log_records(out: Path) -> list[dict[str, Any]]:
    """The metrics log without its wall-clock field (equal across an interrupted and a clean run)."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds_per_iter"} for line in lines]
