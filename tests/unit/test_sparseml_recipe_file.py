"""`modifiers:` naming a SparseML recipe file (a .yaml, or a .md card with YAML front matter):
safe-YAML checks, SparseML's own loader (variables, eval(), __ALL_PRUNABLE__), the method rules,
the shipped card on the tiny model, and SparseML's wrapper around a GradScaler."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.cli import main
from compress.core.errors import RecipeError
from compress.lottery.sparseml_adapter import (all_prunable_params, epoch_range_epochs,
                                               gmp_manager, modifier_names)
from compress.recipe.load import load_recipe
from compress.run import setup as rs
from compress.training.loop import _step
from support.recipes import NO_STAGES, ROOT, TINY, set_args

CARD_RECIPE = ROOT / "recipes" / "maskrcnn_gmp_card.yaml"
CARD = ROOT / "recipes" / "sparseml" / "maskrcnn_gmp_recipe.md"
TINY_CARD = [o for o in TINY if not o.startswith("lottery.")] + NO_STAGES + [
    "evaluate.max_images=2", "modifier_variables.num_epochs=2",
    "modifier_variables.pruning_start_epoch=0.5", "modifier_variables.pruning_update_frequency=0.25"]
LR_ONLY = """modifiers:
  - !SetLearningRateModifier
    start_epoch: 0.0
    learning_rate: eval(rate)
rate: 0.0037
"""


def write_recipe(tmp_path: Path, modifiers: str, method: str = "gradual", extra: str = "") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: t\nmodel: {{arch: maskrcnn}}\nlottery: {{method: {method}}}\n"
                    f"modifiers: {modifiers}\n{extra}")
    return path


def test_card_loads_with_variables_eval_and_overrides():
    recipe = load_recipe(CARD_RECIPE)
    assert recipe.modifiers == str(CARD) and recipe.lottery.method == "gradual"
    assert sorted(modifier_names(recipe.modifiers)) == sorted(
        ["EpochRangeModifier", "LearningRateFunctionModifier", "LearningRateFunctionModifier",
         "GMPruningModifier"])
    assert epoch_range_epochs(recipe.modifiers) == 12.0
    smoke = load_recipe(CARD_RECIPE, smoke=True)
    assert epoch_range_epochs(smoke.modifiers, smoke.modifier_variables) == 4.0


@pytest.mark.parametrize("body, suffix, message", [
    ("modifiers:\n  - !GMPruningModifer\n    params: __ALL_PRUNABLE__\n", ".yaml", "did you mean"),
    ("modifiers:\n  - !!python/object:os.system {}\n", ".yaml", "python tags are refused"),
    ("rate: !SetLearningRateModifier {learning_rate: 0.1}\nmodifiers: []\n", ".yaml",
     "only allowed on entries of a modifiers list"),
    ("num_epochs: 3\n", ".yaml", "at least one list of modifiers"),
    ("# a card without front matter\n", ".md", "front matter"),
    ("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n    end_epoch: eval(nope)\n",
     ".yaml", "SparseML rejected"),
    ("modifiers:\n  - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 2.0}\n", ".yaml",
     "SparseML rejected"),  # SparseML reads block-style modifiers only
    ("modifiers: []\n", ".txt", "not a SparseML recipe file"),
])
def test_bad_recipe_files_are_recipe_errors(tmp_path, body, suffix, message):
    (tmp_path / f"card{suffix}").write_text(body)
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(tmp_path, f"card{suffix}"))


def test_missing_file_names_where_it_looked(tmp_path):
    with pytest.raises(RecipeError, match="relative to the recipe file"):
        load_recipe(write_recipe(tmp_path, "sub/none.yaml"))


@pytest.mark.parametrize("method", ["imp", "oneshot", "dense", "gradual"])
def test_pruning_modifiers_need_gradual_and_cli_exits_2(tmp_path, method, capsys):
    recipe = write_recipe(tmp_path, str(CARD), method)
    if method == "gradual":
        load_recipe(recipe)
        return
    with pytest.raises(RecipeError, match="need lottery.method 'gradual'"):
        load_recipe(recipe)
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "GMPruningModifier" in capsys.readouterr().err


def test_inline_pruning_modifier_under_imp_is_an_error_not_ignored(tmp_path):
    inline = "[!GMPruningModifier {params: __PRUNABLE__, init_sparsity: 0.05, final_sparsity: 0.5, " \
             "start_epoch: 0.0, end_epoch: 1.0, update_frequency: 0.5}]"
    with pytest.raises(RecipeError, match="cannot use !GMPruningModifier"):
        load_recipe(write_recipe(tmp_path, inline, "imp"))


def test_modifier_variables_need_a_file(tmp_path):
    with pytest.raises(RecipeError, match="modifier_variables"):
        load_recipe(write_recipe(tmp_path, "[]", "imp", "modifier_variables: {rate: 0.1}\n"))


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_imp_rounds_train_under_a_learning_rate_card(tmp_path):
    """A training-only card applies to every IMP round: the logged rate is the card's, not the
    toolkit's warm-up / step schedule."""
    (tmp_path / "lr.yaml").write_text(LR_ONLY)
    recipe = tmp_path / "imp.yaml"
    recipe.write_text(CARD_RECIPE.read_text().replace("method: gradual", "method: imp")
                      .replace("modifiers: sparseml/maskrcnn_gmp_recipe.md", f"modifiers: {tmp_path}/lr.yaml")
                      .split("  modifier_variables:")[0])
    out = tmp_path / "out"
    sets = TINY + NO_STAGES + ["evaluate.max_images=2", "train.log_every=1"]
    assert main(["-q", "run", str(recipe), "--smoke", "--out", str(out), *set_args(sets)]) == 0
    rates = {(r["round"], r["iteration"]): r["lr"] for r in map(json.loads, (out / "metrics.jsonl")
             .read_text().splitlines()) if "loss" in r}
    assert {0, 1} <= {k[0] for k in rates}
    assert all(rate == pytest.approx(0.0037) for rate in rates.values()), rates


@pytest.fixture(scope="module")
def card_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("card") / "run"
    assert main(["-q", "run", str(CARD_RECIPE), "--smoke", "--out", str(out),
                 *set_args(TINY_CARD)]) == 0
    return out


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_card_runs_gradual_every_all_prunable_layer_at_final_sparsity(card_run):
    recipe = load_recipe(CARD_RECIPE, smoke=True, overrides=TINY_CARD)
    model = rs.model_factory(recipe, rs.prepare_data(recipe, card_run / "data"))()
    state = torch.load(card_run / "rounds" / "round_0" / "checkpoint.pt", weights_only=True)["model"]
    names = all_prunable_params(model)
    assert "roi_heads.box_predictor.cls_score.weight" in names and len(names) > 15
    for name in names:
        zeros, numel = int((state[name] == 0).sum()), state[name].numel()
        assert zeros == round(0.8 * numel), f"{name}: {zeros}/{numel} zeros"
    summary = json.loads((card_run / "summary.json").read_text())
    assert summary["method"] == "gradual" and summary["iterations_per_round"] == 16  # 2 epochs


class SkippingScaler:
    """A GradScaler stand-in whose step() skips every other optimizer step (as on inf grads)."""

    def __init__(self) -> None:
        self.calls = self.stepped = 0

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer) -> None:
        return None

    def step(self, optimizer) -> None:
        self.calls += 1
        if self.calls % 2 == 0:
            optimizer.step()
            self.stepped += 1

    def update(self) -> None:
        return None


def test_grad_scaler_skips_do_not_shift_the_modifier_schedule(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    text = ("modifiers:\n  - !GMPruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.1\n"
            "    final_sparsity: 0.5\n    start_epoch: 0.0\n    end_epoch: 1.0\n"
            "    update_frequency: 0.25\n")
    scaler = SkippingScaler()
    manager, stepper = gmp_manager(text, model, optimizer, 4, log_dir=tmp_path, scaler=scaler)
    for _ in range(6):
        loss = model(torch.randn(2, 8)).pow(2).sum()
        _step(model, optimizer, loss, scaler, None, stepper)  # the training loop's own step
    assert scaler.calls == 6 and scaler.stepped == 3
    assert stepper.wrapped_steps == 6 and stepper.wrapped_epoch == pytest.approx(1.5)
    sparsity = [float((m.weight == 0).float().mean()) for m in model]
    assert sparsity == [pytest.approx(0.5, abs=0.02)] * 2  # reached at epoch 1, not epoch 2
    manager.finalize(model)
