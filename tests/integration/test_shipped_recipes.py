"""Every shipped recipe's own code path (arch, method, modifiers) runs end to end on the tiny model."""
from __future__ import annotations

import json

import pytest

from compress.cli import main
from support.devtools import CHROMIUM, render
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


def test_appendix_a_chain_and_the_study_report(tmp_path):
    """study_parent's ticket feeds study_mask_transfer (its dense weights) and
    study_transfer_ticket (its ticket), each one run at the parent's sparsity; with the direct
    study run (seed replicates, controls) they make one report whose Appendix A figure and table
    carry the runs' numbers, and which renders in headless Chromium with every figure."""
    base = [o for o in TINY if not o.startswith("lottery.")] + NO_STAGES + [
        "evaluate.max_images=2", "model.heads.anchor_sizes=[8,16,32]"]
    parent, study = tmp_path / "parent", tmp_path / "study"
    one_round = ["lottery.rounds=1", "lottery.rewind=2it"]
    assert main(["-q", "run", str(ROOT / "recipes" / "study_parent.yaml"), "--smoke", "--out", str(parent),
                 *set_args(base + one_round)]) == 0
    assert main(["-q", "run", str(ROOT / "recipes" / "study_lth.yaml"), "--smoke", "--out", str(study),
                 *set_args(base + one_round + ["lottery.control_rounds=[1]"])]) == 0
    parent_sparsity = json.loads((parent / "summary.json").read_text())["rounds"][-1]["prunable_sparsity"]
    runs = {"study_mask_transfer": [f"lottery.source={parent}/rounds/round_0/checkpoint.pt",
                                    f"lottery.target_sparsity={parent_sparsity}"],
            "study_transfer_ticket": [f"lottery.source={parent}"]}
    values = {}
    for name, sets in runs.items():
        out = tmp_path / name
        assert main(["-q", "run", str(ROOT / "recipes" / f"{name}.yaml"), "--smoke", "--out", str(out),
                     *set_args(base + sets)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["method"] == name.removeprefix("study_")
        assert abs(summary["rounds"][-1]["prunable_sparsity"] - parent_sparsity) < 2e-3
        values[name] = summary["rounds"][-1]["metrics"]["bbox_mAP"]
    direct = json.loads((study / "summary.json").read_text())["rounds"]
    assert set(direct[0]["replicates"]) == {"seed_1"}
    report = tmp_path / "report"
    assert main(["-q", "report", str(study), *(str(tmp_path / n) for n in runs), "--out", str(report)]) == 0
    md = (report / "report.md").read_text()
    section = md.split("## Transfer vs direct pruning (Appendix A)")[1].split("\n## ")[0]
    assert "plots/transfer_vs_direct.png" in section
    for name, value in values.items():
        row = next(line for line in section.replace("\\_", "_").splitlines()
                   if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) == pytest.approx(value, abs=1e-4)
        assert float(cells[7]) == pytest.approx(direct[1]["metrics"]["bbox_mAP"], abs=1e-4)
    assert "seed spread" in md and "plots/ticket_vs_controls_study.png" in md
    if CHROMIUM is not None:
        problems, state = render(report / "report.html", tmp_path / "shot.png", tmp_path / "profile")
        assert problems == [] and state["broken"] == 0 and state["n"] >= 4
