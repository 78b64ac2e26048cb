"""Paths in a recipe resolve relative to the recipe file (any current folder), `--set` paths
relative to the current folder; the saved recipe holds them absolute; the run folder is named
from what runs."""
from __future__ import annotations

from pathlib import Path

from compress.recipe.load import load_recipe, load_resolved, resolved_yaml, run_folder_name

ROOT = Path(__file__).resolve().parents[2]

RECIPE = """\
name: t
model: {arch: maskrcnn, backbone: tiny, weights: w/model.pt, backbone_weights: w/backbone.pt}
data: {dataset: coco, root: ../datasets/shapes}
train: {iterations: 10, epochs: null}
lottery:
  method: transfer_ticket
  source: tickets/ticket.pt
  runtime: {profile: profiles/p.json}
"""


def _write(tmp_path: Path) -> Path:
    recipe = tmp_path / "project" / "recipes" / "r.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(RECIPE)
    return recipe


def test_every_path_is_relative_to_the_recipe_file_not_the_current_folder(tmp_path, monkeypatch):
    recipe_path = _write(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(recipe_path)
    here = recipe_path.parent.resolve()
    assert recipe.data.root == str((here / "../datasets/shapes").resolve())
    assert recipe.model.weights == str(here / "w/model.pt")
    assert recipe.model.backbone_weights == str(here / "w/backbone.pt")
    assert recipe.lottery.source == str(here / "tickets/ticket.pt")
    assert recipe.lottery.runtime.profile == str(here / "profiles/p.json")


def test_relative_recipe_path_resolves_against_its_own_folder(tmp_path, monkeypatch):
    recipe_path = _write(tmp_path)
    monkeypatch.chdir(tmp_path / "project")
    recipe = load_recipe(Path("recipes/r.yaml"))
    assert recipe.lottery.source == str(tmp_path / "project" / "recipes" / "tickets" / "ticket.pt")


def test_absolute_paths_and_schemes_stay(tmp_path):
    recipe_path = _write(tmp_path)
    text = RECIPE.replace("tickets/ticket.pt", "random-init:3").replace(
        "../datasets/shapes", str(tmp_path / "abs"))
    recipe_path.write_text(text.replace("transfer_ticket", "mask_transfer") +
                           "  target_sparsity: 0.5\n")
    recipe = load_recipe(recipe_path)
    assert recipe.lottery.source == "random-init:3"
    assert recipe.data.root == str(tmp_path / "abs")


def test_set_paths_are_relative_to_the_current_folder(tmp_path, monkeypatch):
    recipe_path = _write(tmp_path)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(recipe_path, overrides=["data.root=mine", "lottery.source=t.pt"])
    assert recipe.data.root == str(tmp_path / "mine")
    assert recipe.lottery.source == str(tmp_path / "t.pt")


def test_saved_recipe_holds_absolute_paths_and_reloads_from_anywhere(tmp_path, monkeypatch):
    recipe = load_recipe(_write(tmp_path))
    saved = tmp_path / "run" / "recipe.yaml"
    saved.parent.mkdir()
    saved.write_text(resolved_yaml(recipe))
    monkeypatch.chdir(tmp_path / "run")
    again = load_resolved(saved)
    assert again == recipe and Path(again.data.root).is_absolute()


def test_smoke_profile_paths_resolve_against_the_recipe_file(tmp_path):
    recipe_path = _write(tmp_path)
    recipe_path.write_text(RECIPE + "smoke:\n  data: {root: gen}\n  lottery: {source: s.pt}\n")
    recipe = load_recipe(recipe_path, smoke=True)
    assert recipe.data.root == str(recipe_path.parent.resolve() / "gen")
    assert recipe.lottery.source == str(recipe_path.parent.resolve() / "s.pt")


def test_run_folder_is_named_from_what_runs():
    full = load_recipe(ROOT / "recipes" / "maskrcnn_lth.yaml")
    smoke = load_recipe(ROOT / "recipes" / "maskrcnn_lth.yaml", smoke=True)
    assert run_folder_name(full).startswith("maskrcnn_r50_imp-")
    assert run_folder_name(smoke).startswith(f"maskrcnn_{_tag(smoke.model.backbone)}_imp-")
    assert smoke.model.backbone != "resnet50"
    tiny = load_recipe(ROOT / "recipes" / "maskrcnn_lth.yaml", overrides=["model.backbone=tiny"])
    assert run_folder_name(tiny).startswith("maskrcnn_tiny_imp-")


def _tag(backbone: str) -> str:
    return {"resnet18": "r18", "resnet50": "r50"}.get(backbone, backbone)
