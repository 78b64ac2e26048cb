"""SIGKILL a tiny `compress run` during its quantization phase and continue it with `--resume`.

One uninterrupted reference run (started first, in parallel); one run SIGKILLed while QAT trains
its second epoch (the first checkpointed in quantize/last.pt), then resumed. The INT8 ticket
(every weight, scale and zero point), its mask, the phase's metrics log and its record must
equal the reference bit for bit.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from support.kill_resume import kill_then_resume, run_command
from support.recipes import TINY_LOTTERY, subprocess_env

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "maskrcnn_lth.yaml"
SETS = [*TINY_LOTTERY, "lottery.rounds=1", "quantize.enabled=true", "quantize.iterations=8",
        "quantize.observer_freeze=0.5", "export.enabled=false", "bench.enabled=false",
        "evaluate.tide=false"]  # 8 images at batch 2: 4 QAT iterations an epoch, 2 epochs
TIMEOUT_S = 600


command = run_command(RECIPE, SETS)


def load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def qat_epoch_saved(out: Path) -> bool:
    path = out / "quantize" / "last.pt"
    try:
        return path.is_file() and int(load(path)["iteration"]) > 0
    except (OSError, RuntimeError, KeyError, EOFError):
        return False


def phase_unfinished(run: Path) -> None:
    assert not (run / "quantize" / "model.pt").exists()


def test_sigkill_during_quantization_then_resume(tmp_path):
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    kill_then_resume(command, out, ref_out, cwd=REPO, env=subprocess_env(), ready=qat_epoch_saved,
                     timeout_s=TIMEOUT_S, after_kill=phase_unfinished)
    a, b = load(ref_out / "quantize" / "model.pt"), load(out / "quantize" / "model.pt")
    assert set(a["model"]) == set(b["model"])
    assert any("scale" in k for k in a["model"]), "no quantization scales in the INT8 ticket"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["mask"][k], b["mask"][k]) for k in a["mask"])
    records = [(p / "quantize" / "metrics.jsonl").read_text().splitlines() for p in (ref_out, out)]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "seconds_per_iter"}
              for line in lines] for lines in records]
    assert strip[0] == strip[1]
    qa = json.loads((ref_out / "summary.json").read_text())["quantize"]
    qb = json.loads((out / "summary.json").read_text())["quantize"]
    assert qa["pruned_nonzero_after_training"] == 0
    assert qa["eval"] == qb["eval"]
