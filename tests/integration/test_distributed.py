"""torchrun --nproc_per_node 2 (gloo, CPU): two IMP rounds on the tiny model; after every round's
training the two replicas hold the same weights (each rank's digest, gathered, equals the saved
checkpoint's) and the masks are identical on both ranks; compared with a single-process run at the
same global batch and seed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from compress.core.checkpoint import load_checkpoint
from compress.core.distributed import mask_digest, replica_digest
from compress.lottery.masks import load_mask, mask_iou
from support.recipes import NO_STAGES, ROOT, TINY, set_args

RUN = [str(ROOT / "recipes" / "maskrcnn_lth.yaml"), "--smoke"]
SETTINGS = [o for o in TINY if not o.startswith(("lottery.rounds", "train.batch_size", "train.iterations"))] \
    + NO_STAGES + ["lottery.rounds=2", "train.batch_size=4", "train.iterations=8", "evaluate.max_images=2"]


@pytest.mark.skipif(shutil.which("torchrun") is None and not (ROOT / ".venv/bin/torchrun").exists(),
                    reason="torchrun not installed")
def test_two_rank_imp_masks_identical_across_ranks(tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517"]
    proc = subprocess.run([*torchrun, "-m", "compress", "-q", "run", *RUN, "--out", str(out),
                           *set_args(SETTINGS)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    for k in (0, 1, 2):  # each rank's trained weights: identical replicas, rank 0's saved
        metrics = json.loads((out / "rounds" / f"round_{k}" / "metrics.json").read_text())["metrics"]
        weights = metrics["rank_weight_digests"]
        assert len(weights) == 2 and weights[0] == weights[1]
        saved = load_checkpoint(out / "rounds" / f"round_{k}" / "checkpoint.pt")["model"]
        assert weights[0] == replica_digest(saved)
    for k in (1, 2):
        metrics = json.loads((out / "rounds" / f"round_{k}" / "metrics.json").read_text())["metrics"]
        assert "bbox_mAP" in metrics and "segm_mAP" in metrics  # predicted per rank, gathered
        digests = metrics["rank_mask_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]
        assert digests[0] == mask_digest(load_mask(out / "rounds" / f"round_{k}" / "mask.pt"))
        assert abs(json.loads((out / "rounds" / f"round_{k}" / "metrics.json").read_text())
                   ["prunable_sparsity"] - (1 - 0.8 ** k)) < 1e-3

    # Single process, same global batch (4) and seed. The masks agree largely but not bit for bit:
    # each rank's BatchNorm normalises over its own 2 images (not 4), the DistributedSampler's
    # permutation differs from the single-process sampler's, and RPN / RoI sampling draws from
    # each rank's own RNG stream; tiny weight differences then move the magnitude ranks.
    from compress.cli import main

    single = tmp_path / "single"
    assert main(["-q", "run", *RUN, "--out", str(single), *set_args(SETTINGS)]) == 0
    a = load_mask(out / "rounds" / "round_2" / "mask.pt")
    b = load_mask(single / "rounds" / "round_2" / "mask.pt")
    assert set(a) == set(b)
    same = sum(int((a[n] == b[n]).sum()) for n in a) / sum(a[n].numel() for n in a)
    assert same > 0.6, same
    assert mask_iou(a, b) > 0.0
    torch.testing.assert_close(sum(int(m.sum()) for m in a.values()),
                               sum(int(m.sum()) for m in b.values()))
