"""The lottery controls (reinit, random_mask, rewind_to_init) on a tiny Mask R-CNN, through the
real runner: their masks, starting weights, files and summary records."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import compress.lottery.rounds as rounds
from compress.core.errors import RecipeError
from compress.core.seeding import seed_everything
from compress.lottery.controls import random_mask_like
from compress.recipe.load import load_recipe
from compress.run import pipeline
from compress.core.folders import RunFolder
from compress.report.controls_section import sec_controls
from compress.report.page import Section
from compress.report.run_data import load_run
from support.recipes import TINY_LOTTERY

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "maskrcnn_lth.yaml"
TINY = [*TINY_LOTTERY, "lottery.rounds=2", "lottery.controls=[reinit,random_mask,rewind_to_init]",
        "lottery.control_rounds=[2]", "lottery.seeds=[5]", "lottery.seed_rounds=[0,2]"]
NAMES = ("reinit", "random_mask", "rewind_to_init")


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def control_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, dict, list]:
    """A 2-round run with every control at round 2; the state each control starts from."""
    torch.set_num_threads(1)
    starts: dict[str, dict[str, torch.Tensor]] = {}
    with pytest.MonkeyPatch.context() as mp:
        real = rounds.train_round

        def train_round(model, folder, schedule, plan, *args, **kwargs):
            out_dir = folder.root
            key = f"{out_dir.parent.parent.name}/{out_dir.name}" if out_dir.name == "seed_5" \
                else out_dir.name
            starts[key] = {"iteration": plan.start_iteration,
                                    **{k: v.detach().clone() for k, v in model.state_dict().items()}}
            return real(model, folder, schedule, plan, *args, **kwargs)

        mp.setattr(rounds, "train_round", train_round)
        recipe = load_recipe(RECIPE, smoke=True, overrides=TINY)
        root = tmp_path_factory.mktemp("controls")
        run = RunFolder(root)
        seed_everything(recipe.train.seed)
        records, _, _ = pipeline.find_ticket(recipe, run, False)
    return run, starts, records


def test_control_files_and_summary(control_run):
    run, _, records = control_run
    assert "controls" not in records[1]
    assert "replicates" not in records[1]
    assert set(records[2]["controls"]) == set(NAMES)
    summary = run.read_summary()
    for name in NAMES:
        out = run.round(2).root / "controls" / name
        for file in ("checkpoint.pt", "mask.pt", "metrics.json"):
            assert (out / file).is_file(), f"{name}: {file} missing"
        assert not (out / "last.pt").exists()
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["metrics"] == summary["rounds"][2]["controls"][name]
        assert "bbox_mAP" in saved["metrics"] and "segm_mAP" in saved["metrics"]
        assert saved["metrics"]["pruned_nonzero_after_training"] == 0


def test_control_masks_keep_the_rounds_density_per_layer(control_run):
    run, _, _ = control_run
    ticket = load(run.round(2).root / "mask.pt")
    for name in NAMES:
        mask = load(run.round(2).root / "controls" / name / "mask.pt")
        assert set(mask) == set(ticket)
        for layer, kept in ticket.items():
            assert int(mask[layer].sum()) == int(kept.sum()), f"{name} {layer}"
        same = all(torch.equal(mask[n], ticket[n]) for n in ticket)
        assert same == (name != "random_mask")
        weights = load(run.round(2).root / "controls" / name / "checkpoint.pt")["model"]
        assert all(int((weights[n][~m] != 0).sum()) == 0 for n, m in mask.items())


def test_control_starting_weights(control_run):
    run, starts, _ = control_run
    rewind = load(run.round(0).root / "rewind.pt")["model"]
    mask = load(run.round(2).root / "mask.pt")
    random = load(run.round(2).root / "controls" / "random_mask" / "mask.pt")
    assert starts["random_mask"]["iteration"] == 2 and starts["reinit"]["iteration"] == 2
    assert starts["rewind_to_init"]["iteration"] == 0
    for name, kept in mask.items():
        assert torch.equal(starts["random_mask"][name], rewind[name] * random[name])
    differ = [n for n in mask if not torch.equal(starts["reinit"][n], rewind[n] * mask[n])]
    assert len(differ) == len(mask), "reinit started from the rewind weights"
    differ0 = [n for n in mask if not torch.equal(starts["rewind_to_init"][n], rewind[n] * mask[n])]
    assert differ0, "rewind_to_init started from the rewind weights, not iteration 0"
    assert not any(torch.equal(starts["reinit"][n], starts["rewind_to_init"][n]) for n in mask)


def test_random_mask_like_is_seeded_and_keeps_counts():
    gen = torch.Generator().manual_seed(3)
    mask = {"a": torch.rand(5, 7, generator=gen) > 0.6, "b": torch.rand(40, generator=gen) > 0.1}
    one, two = random_mask_like(mask, 11), random_mask_like(mask, 11)
    assert all(torch.equal(one[n], two[n]) for n in mask)
    assert all(int(one[n].sum()) == int(mask[n].sum()) for n in mask)
    assert not torch.equal(random_mask_like(mask, 12)["b"], one["b"])


@pytest.mark.parametrize("sets, message", [
    (["lottery.controls=[reinit,reinit]"], "twice"),
    (["lottery.controls=[shuffle]"], "controls"),
    (["lottery.controls=[reinit]", "lottery.control_rounds=[0]"], "control_rounds"),
    (["lottery.controls=[reinit]", "lottery.control_rounds=[9]"], "control_rounds"),
    (["lottery.control_rounds=[1]"], "without controls"),
    (["lottery.controls=[reinit]", "lottery.method=dense"], "pruning rounds"),
])
def test_control_recipe_errors(sets, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(RECIPE, overrides=["lottery.rounds=2", *sets])


def test_report_plots_ticket_vs_controls(control_run, tmp_path):
    run, _, records = control_run
    section = Section("controls", "Ticket vs controls")
    sec_controls(section, [load_run(run.root, "tiny")], tmp_path)
    assert (tmp_path / "ticket_vs_controls.png").stat().st_size > 1000
    rows = section.tables[0].rows
    bbox = next(row for row in rows if row[2] == "bbox_mAP")
    assert bbox[0] == "2" and len(bbox) == 5 + 2 * len(NAMES)
    assert float(bbox[4]) == pytest.approx(records[2]["metrics"]["bbox_mAP"], abs=1e-4)


def test_seed_replicates_start_where_the_round_does_with_another_seed(control_run):
    run, starts, records = control_run
    summary = run.read_summary()
    for index in (0, 2):
        out = run.round(index).root / "replicates" / "seed_5"
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["seed"] == 5 and saved["round"] == index
        assert summary["rounds"][index]["replicates"] == {"seed_5": saved["metrics"]}
        assert saved["metrics"]["pruned_nonzero_after_training"] == 0
        # the same model, another seed's training: its numbers are its own
        assert saved["metrics"]["val_loss"] != records[index]["metrics"]["val_loss"]
    assert starts["round_0/seed_5"]["iteration"] == 0
    rewind = load(run.round(0).root / "rewind.pt")["model"]
    mask = load(run.round(2).root / "mask.pt")
    assert load(run.round(2).root / "replicates" / "seed_5" / "mask.pt").keys() == mask.keys()
    assert starts["round_2/seed_5"]["iteration"] == 2
    for name, kept in mask.items():
        assert torch.equal(starts["round_2/seed_5"][name], rewind[name] * kept)
    # round 0's replicate starts from seed 5's initialisation, not the run's (seed 0)
    differ = [n for n in mask if not torch.equal(starts["round_0/seed_5"][n],
                                                 starts["rewind_to_init"][n])]
    assert len(differ) == len(mask)


def test_report_seed_spread_and_verdicts(control_run, tmp_path):
    run, _, records = control_run
    section = Section("controls", "Ticket vs controls")
    sec_controls(section, [load_run(run.root, "tiny")], tmp_path)
    spread = section.tables[1]
    row = next(r for r in spread.rows if r[0] == "0" and r[2] == "bbox_mAP")
    values = [records[0]["metrics"]["bbox_mAP"], records[0]["replicates"]["seed_5"]["bbox_mAP"]]
    assert row[3] == "2"
    assert float(row[5]) == pytest.approx(sum(values) / 2, abs=1e-4)
    assert float(row[6]) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-4)
    reinit = next(t for t in section.text if "vs reinit" in t)
    gap = records[2]["metrics"]["bbox_mAP"] - records[2]["controls"]["reinit"]["bbox_mAP"]
    assert f"gap {gap:+.4f}" in reinit and "round 2" in reinit
    two_sd = 2 * abs(records[2]["metrics"]["bbox_mAP"]
                     - records[2]["replicates"]["seed_5"]["bbox_mAP"]) / 2 ** 0.5
    assert f"2 sd = {two_sd:.4f}" in reinit


@pytest.mark.parametrize("sets, message", [
    (["lottery.seeds=[1,1]"], "distinct"),
    (["lottery.seeds=[0]"], "repeats train.seed"),
    (["lottery.seeds=[1]", "lottery.seed_rounds=[3]"], "seed_rounds"),
])
def test_seed_recipe_errors(sets, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(RECIPE, overrides=["lottery.rounds=2", *sets])


def test_keeps_dense_verdict_uses_the_seed_floor(tmp_path):
    from compress.report.controls_section import _keeps_dense
    from compress.report.run_data import RunData
    rounds = [{"round": 0, "prunable_sparsity": 0.0,
               "metrics": {"bbox_mAP": 0.44}, "replicates": {"seed_1": {"bbox_mAP": 0.40}}},
              {"round": 1, "prunable_sparsity": 0.2, "metrics": {"bbox_mAP": 0.39}},
              {"round": 2, "prunable_sparsity": 0.36, "metrics": {"bbox_mAP": 0.30}}]
    line = _keeps_dense(RunData(tmp_path, "r", {}, rounds), "bbox_mAP")
    floor = 0.42 - 2 * (0.04 / 2 ** 0.5)
    assert f"{floor:.4f}" in line and "up to round 1 (20.0%" in line and "round 2 falls below" in line
    rounds[0].pop("replicates")
    assert "already falls below the dense 0.4400" in _keeps_dense(RunData(tmp_path, "r", {}, rounds),
                                                                  "bbox_mAP")
