"""Recipe validation: every bad recipe exits 2 with one line naming the key path; good ones load."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compress.cli import main
from compress.recipe.load import load_recipe, load_resolved, recipe_hash, resolved_yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

GOOD = """\
name: t
model: {arch: maskrcnn, backbone: tiny}
train: {iterations: 10, epochs: null}
"""

# (recipe text, a fragment the one-line error must contain)
BAD = [
    ("name: t\nmodle: {arch: maskrcnn}\n", "did you mean 'model'"),
    (GOOD + "lottery: {prune_fracton: 0.2}\n", "did you mean 'prune_fraction'"),
    (GOOD.replace("iterations: 10", "iterations: ten"), "train.iterations"),
    (GOOD + "lottery: {method: oneshot, target_sparsity: 1.2}\n", "lottery.target_sparsity"),
    (GOOD + "lottery: {rounds: 0}\n", "lottery.rounds"),
    (GOOD.replace("iterations: 10", "iterations: 10, lr: -0.1"), "train.lr"),
    (GOOD.replace("arch: maskrcnn", "arch: yolo"), "model.arch"),
    (GOOD.replace("backbone: tiny", "backbone: resnet101"), "model.backbone"),
    (GOOD + "modifiers:\n  - !GlobalMagnitudePrunningModifier {final_sparsity: 0.5}\n",
     "did you mean '!GlobalMagnitudePruningModifier'"),
    ("name: t\nmodel: {arch: maskrcnn\ntrain: 3\n", "line "),
    ("", "empty"),
    ("name: !!python/object/apply:os.system ['echo pwned > PWNED']\nmodel: {arch: maskrcnn}\n",
     "python tags are refused"),
    (GOOD + "lottery: {rewind: 1epoch}\n", "lottery.rewind"),
    (GOOD.replace("epochs: null", "epochs: 2"), "exactly one of epochs or iterations"),
    (GOOD + "lottery: {method: mask_transfer, target_sparsity: 0.5}\n", "lottery.source"),
    (GOOD + "export: {opset: 30}\n", "export.opset"),
    (GOOD + "data: {dataset: coco}\n", "root is required"),
    (GOOD + "bench: {batch_sizes: [0]}\n", "bench.batch_sizes"),
    (GOOD + "train2: !GMPruningModifier {final_sparsity: 0.5}\n", "only allowed on entries of the modifiers"),
    ("- name: t\n", "must be a mapping"),
    (GOOD + "model2: 1\n", "unknown key 'model2'"),
    (GOOD + "modifiers:\n  - {final_sparsity: 0.5}\n", "modifiers"),
    (GOOD + "evaluate: {engines: [tensorrt]}\n", "evaluate.engines"),
    (GOOD.replace("backbone: tiny", "backbone: tiny, min_size: 64, max_size: 32"), "max_size"),
    (GOOD + "lottery: {distribution: random}\n", "lottery.distribution"),
    # a rewind point past the end of a round: same unit at validation, mixed units once the
    # iterations per epoch are known (16 generated images at batch 2: 8 an epoch), before any data
    (GOOD + "lottery: {rewind: 11it}\n", "lottery.rewind: '11it' is beyond"),
    (GOOD.replace("iterations: 10, epochs: null", "epochs: 1") + "lottery: {rewind: 1.5ep}\n",
     "lottery.rewind: '1.5ep' is beyond"),
    (GOOD.replace("iterations: 10", "iterations: 10, batch_size: 2") + "lottery: {rewind: 2ep}\n"
     "data: {synthetic: {train_images: 16}}\n", "lottery.rewind: '2ep' is iteration 16, beyond"),
]


@pytest.mark.parametrize("text,fragment", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_recipe_exits_2_with_one_line(tmp_path, capsys, monkeypatch, text, fragment):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["run", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert str(path) in err
    assert fragment in err
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("override,fragment", [
    ("train.lr=-1", "train.lr"),
    ("train.lr_step=[10it]", "did you mean 'lr_steps'"),
    ("lottery.rounds=zero", "lottery.rounds"),
    ("model", "key.path=value"),
])
def test_bad_override_exits_2(tmp_path, capsys, override, fragment):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


def test_rewind_within_a_round_or_unused_is_accepted(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD + "lottery: {rewind: 10it}\n")
    assert load_recipe(path).lottery.rewind == "10it"  # the last iteration is still a point
    path.write_text(GOOD + "lottery: {method: dense, rewind: 50it}\n")
    assert load_recipe(path).lottery.method == "dense"  # no round rewinds


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_cli_subprocess_bad_recipe_has_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nmodel: {arch: maskrcnn, backbone: resnet5}\n")
    proc = subprocess.run([sys.executable, "-m", "compress", "run", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "model.backbone" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_validate_with_and_without_smoke(path):
    full = load_recipe(path)
    smoke = load_recipe(path, smoke=True)
    assert smoke.data.dataset == "synthetic" and smoke.data.root is None
    assert recipe_hash(full) != recipe_hash(smoke)


def test_override_applies_and_resolved_yaml_round_trips(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD + "modifiers:\n  - !SetLearningRateModifier {start_epoch: 0.0,"
                    " learning_rate: 0.01}\n")  # pruning modifiers need method gradual
    recipe = load_recipe(path, overrides=["train.lr=0.005", "lottery.rounds=3"])
    assert recipe.train.lr == 0.005 and recipe.lottery.rounds == 3
    saved = tmp_path / "recipe.yaml"
    saved.write_text(resolved_yaml(recipe))
    assert "!SetLearningRateModifier" in saved.read_text()
    again = load_resolved(saved)
    assert again == recipe and recipe_hash(again) == recipe_hash(recipe)


def test_safe_loading_never_constructs_objects(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: !!python/name:os.system\nmodel: {arch: maskrcnn}\n")
    with pytest.raises(Exception) as info:
        load_recipe(path)
    assert "python tags are refused" in str(info.value)
    assert yaml.safe_load("a: 1") == {"a": 1}


def _schema_keys(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _schema_keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_recipe_reference_lists_every_key():
    from compress.recipe.schema import Recipe

    reference = (ROOT / "docs" / "recipe.md").read_text()
    rows = {line.split("|")[1].strip() for line in reference.splitlines() if line.startswith("| `")}
    missing = [k for k in _schema_keys(Recipe) if f"`{k}`" not in rows]
    assert not missing, f"docs/recipe.md's table lacks {missing}"


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```bash\n")
    main_job, tests = blocks[1].split("\n```")[0], blocks[2].split("\n```")[0]
    assert main_job.endswith("compress run recipes/maskrcnn_lth.yaml --smoke")
    assert tests in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
