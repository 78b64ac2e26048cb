"""A published torchvision classification recipe (SparseML's ResNet beans tutorial structure:
`conv1.weight`, `re:layer1.*.conv1.weight`, ...) on a detector, whose ResNet is `backbone.body`:
without `modifier_prefix` one recipe-error line naming the file, the pattern and the detector's
names (exit 2, nothing written); with `modifier_prefix: backbone.body.` a gradual run prunes
exactly those tensors to the recipe's 90%."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from compress.cli import main
from compress.core.errors import RecipeError
from compress.lottery.sparseml_adapter import modifier_params, pruning_targets
from compress.recipe.load import load_recipe
from compress.recipe.sparseml_file import prefix_params, prefixed_recipe
from compress.recipe.modifier_params import check_params_found, modifier_source
from support.recipes import NO_STAGES, ROOT, TINY, set_args

PUBLISHED = ROOT / "tests" / "fixtures" / "sparseml" / "resnet50-beans-pruning-recipe.yaml"
PREFIX = "backbone.body."
# a detector's names: its ResNet-18 body under backbone.body, then the FPN (no classifier head)
DETECTOR = [PREFIX + n for n, _ in resnet18(weights=None).named_parameters()
            if not n.startswith("fc.")] + ["backbone.fpn.inner_blocks.0.0.weight"]
CONVS = re.compile(r"backbone\.body\.(conv1|layer[1-4]\.\d+\.conv[12])\.weight")  # what it prunes
# a gradual run of the published recipe, smoke-sized: 2 epochs of 8 iterations, pruned in epoch 1
SHORT = {"num_epochs": 2.0, "pruning_start_epoch": 0.0, "pruning_end_epoch": 1.0,
         "pruning_update_frequency": 0.25}
RUN_SETS = [o for o in TINY if not o.startswith(("lottery.", "model.backbone"))] + NO_STAGES + [
    "evaluate.max_images=2", "model.heads.fpn_channels=16", "model.heads.representation_size=32",
    "model.heads.mask_head_channels=8", "model.heads.box_batch_size_per_image=16",
    "model.heads.rpn_post_nms_top_n_train=50", "model.heads.rpn_post_nms_top_n_test=20"]


def write_recipe(tmp_path: Path, prefix: str | None) -> Path:
    lines = ["name: beans", "model: {arch: maskrcnn, backbone: resnet18}",
             "lottery: {method: gradual}", "train: {epochs: null, iterations: 16}", f"modifiers: {PUBLISHED}",
             "modifier_variables: {" + ", ".join(f"{k}: {v}" for k, v in SHORT.items()) + "}"]
    if prefix is not None:
        lines.append(f"modifier_prefix: {prefix}")
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("params, expected", [
    ("conv1.weight", "backbone.body.conv1.weight"),
    ("re:layer1.*.conv1.weight", r"re:backbone\.body\.layer1.*.conv1.weight"),
    ("re:^layer1", r"re:^backbone\.body\.layer1"),
    (["conv1.weight", "__ALL_PRUNABLE__"], ["backbone.body.conv1.weight", "__ALL_PRUNABLE__"]),
    ("__ALL_PRUNABLE__", "__ALL_PRUNABLE__"), ("eval(names)", "eval(names)"),
])
def test_prefix_params(params, expected):
    assert prefix_params(params, PREFIX) == expected


def test_prefixed_published_recipe_keeps_variables_and_matches_only_the_backbone():
    text = prefixed_recipe(str(PUBLISHED), PREFIX)
    (params,) = modifier_params(text, SHORT)
    assert params[0] == "backbone.body.conv1.weight" and len(params) == 9
    (target,) = pruning_targets(text, SHORT)
    assert target["target"] == 0.9 and target["end_epoch"] == 1.0  # eval() and overrides applied
    check_params_found([params], DETECTOR, str(PUBLISHED))
    selected = [n for n in DETECTOR if any(re.match(p[3:], n) if p.startswith("re:") else p == n
                                           for p in params)]
    assert selected == [n for n in DETECTOR if CONVS.fullmatch(n)] and len(selected) == 17


def test_unprefixed_recipe_names_the_pattern_and_the_detector_names():
    with pytest.raises(RecipeError) as info:
        check_params_found(modifier_params(str(PUBLISHED)), DETECTOR, str(PUBLISHED))
    assert str(info.value) == (
        f"{PUBLISHED}: modifiers.params: 'conv1.weight' matches no parameter of the model (its "
        "names look like backbone.body.conv1.weight, backbone.body.layer1.0.conv1.weight, ...); "
        "set `modifier_prefix: backbone.body.` in the recipe to aim the modifiers there")
    with pytest.raises(RecipeError, match=r"'re:layer9\.\*' matches no parameter .* look like "
                                          r"backbone\.body\.conv1\.weight, backbone\.body\.bn1"):
        check_params_found([["re:layer9.*"]], DETECTOR, None)  # no prefix fits: no hint


@pytest.mark.parametrize("line, message", [
    ("modifier_prefix: backbone.body", "not a parameter-name prefix"),
    ("modifier_prefix: 'backbone..body.'", "not a parameter-name prefix"),
])
def test_bad_prefix_is_a_recipe_error(tmp_path, line, message):
    path = write_recipe(tmp_path, None)
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(RecipeError, match=f"modifier_prefix.*{message}"):
        load_recipe(path)


def test_prefix_needs_modifiers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nmodel: {arch: maskrcnn}\nmodifier_prefix: backbone.body.\n")
    with pytest.raises(RecipeError, match="needs a modifiers section"):
        load_recipe(path)


def test_inline_modifiers_are_prefixed_but_not_the_prunable_placeholder(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nmodel: {arch: maskrcnn}\nlottery: {method: gradual}\n"
                    "modifier_prefix: backbone.body.\nmodifiers:\n"
                    "  - !ConstantPruningModifier {params: [conv1.weight], start_epoch: 0.0}\n"
                    "  - !ConstantPruningModifier {params: __PRUNABLE__, start_epoch: 0.0}\n")
    source = modifier_source(load_recipe(path), ("roi_heads.box_head.fc6.weight",))
    assert sorted(modifier_params(source)) == [["backbone.body.conv1.weight"],
                                       ["roi_heads.box_head.fc6.weight"]]


def test_published_recipe_without_prefix_exits_2_in_one_line_writing_nothing(tmp_path, capsys):
    """Checked when the recipe loads, on the recipe's detector (built on the meta device)."""
    out = tmp_path / "run"
    assert main(["-q", "run", str(write_recipe(tmp_path, None)), "--out", str(out),
                 *set_args(RUN_SETS)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {PUBLISHED}: modifiers.params: 'conv1.weight' matches no parameter of "
                   "the model (its names look like backbone.body.conv1.weight, "
                   "backbone.body.layer1.0.conv1.weight, ...); set `modifier_prefix: "
                   "backbone.body.` in the recipe to aim the modifiers there")
    assert not out.exists()
    load_recipe(write_recipe(tmp_path, PREFIX))  # the prefix makes every pattern match


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_published_recipe_with_prefix_prunes_the_backbone_convs_to_90(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(["-q", "run", str(write_recipe(tmp_path, PREFIX)), "--out", str(out),
                 *set_args(RUN_SETS)]) == 0
    state = torch.load(out / "rounds" / "round_0" / "checkpoint.pt", weights_only=True)["model"]
    pruned = [n for n in state if CONVS.fullmatch(n)]
    assert len(pruned) == 1 + 4 * 2 * 2  # the stem and both convs of every ResNet-18 block
    for name in pruned:
        assert float((state[name] == 0).float().mean()) == pytest.approx(0.9, abs=0.005), name
    for name in ("backbone.body.layer2.0.downsample.0.weight", "backbone.fpn.inner_blocks.0.0.weight",
                 "roi_heads.box_head.fc6.weight"):
        assert float((state[name] == 0).float().mean()) < 0.01, name  # outside the recipe


def test_prefix_leaves_a_card_of_all_prunable_as_sparseml_reads_it():
    card = ROOT / "recipes" / "sparseml" / "maskrcnn_gmp_recipe.md"  # YAML front matter
    text = prefixed_recipe(str(card), PREFIX)
    assert pruning_targets(text) == pruning_targets(str(card))
    assert modifier_params(text) == modifier_params(str(card)) == [["__ALL_PRUNABLE__"]]
