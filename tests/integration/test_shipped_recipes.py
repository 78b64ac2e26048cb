"""Every shipped recipe's own code path (arch, method, modifiers) runs end to end on the tiny model."""
from __future__ import annotations

import json

import pytest

from compress.cli import main
from support.recipes import NO_STAGES, ROOT, TINY, set_args

CASES = {
    "keypointrcnn_lth": ["lottery.rounds=1"],
    "fasterrcnn_voc_lth": ["lottery.rounds=1"],
    "maskrcnn_gmp": ["train.iterations=16", "train.lr_steps=[12it]"],
    "maskrcnn_mask_transfer": [],
    "maskrcnn_gmp_card": ["modifier_variables.num_epochs=2", "modifier_variables.pruning_start_epoch=0.5",
                          "modifier_variables.pruning_update_frequency=0.25"],
    "study_lth": ["lottery.rounds=2", "lottery.control_rounds=[2]", "model.heads.anchor_sizes=[8,16,32]"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_recipe_runs_on_the_tiny_model(tmp_path, name):
    overrides = [o for o in TINY if not (name in ("maskrcnn_gmp", "maskrcnn_mask_transfer",
                                                  "maskrcnn_gmp_card")
                                         and o.startswith("lottery."))]
    overrides = [o for o in overrides if not any(o.split("=")[0] == c.split("=")[0] for c in CASES[name])]
    out = tmp_path / name
    code = main(["-q", "run", str(ROOT / "recipes" / f"{name}.yaml"), "--smoke", "--out", str(out),
                 *set_args(overrides + CASES[name] + NO_STAGES + ["evaluate.max_images=2"])])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    last = summary["rounds"][-1]
    assert (out / "ticket.pt").is_file()
    if name == "maskrcnn_gmp":  # SparseML's GMP schedule ran during the single training run
        assert 0.5 < last["prunable_sparsity"] < 0.81
    elif name == "maskrcnn_gmp_card":  # the card's __ALL_PRUNABLE__ GMP to 80%, 2 epochs
        assert abs(last["prunable_sparsity"] - 0.8) < 1e-3 and summary["iterations_per_round"] == 16
    elif name == "study_lth":  # 2 rounds of p = 0.2 and both controls at round 2
        assert abs(last["prunable_sparsity"] - 0.36) < 1e-3
        assert set(last["controls"]) == {"reinit", "random_mask"}
    elif name == "maskrcnn_mask_transfer":
        assert abs(last["prunable_sparsity"] - 0.5) < 1e-3 and summary["method"] == "mask_transfer"
    else:
        assert abs(last["prunable_sparsity"] - 0.2) < 1e-3
    if name == "keypointrcnn_lth":
        assert "kp_mAP" in last["metrics"]
