"""SparseML adapter: recipes, one-shot prune == the pure pruner, GMP and constant pruning, pitfalls."""
from __future__ import annotations

import pytest
import torch

from compress.core.errors import RecipeError
from compress.lottery.masks import (MaskHolder, Ranking, dense_mask, is_nested, magnitude_prune,
                                    mask_from_model)
from compress.models.build import build_model
from compress.models.prunable import select_prunable
from compress.lottery.sparseml_adapter import (constant_pruning_recipe, gmp_manager, known_modifier_names,
                                       manager_from_yaml, oneshot_prune_recipe, sparseml_prune,
                                       validate_modifier_tags)
from support.tiny_training import sgd, train_steps


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("maskrcnn", "tiny", 3, min_size=64, max_size=64)


def pruned_nonzero(model, mask) -> int:
    state = model.state_dict()
    return sum(int((state[n][~m] != 0).sum()) for n, m in mask.items())


def test_recipes_parse_with_sparseml():
    names = ["backbone.body.conv1.weight", "rpn.head.conv.0.0.weight"]
    text = oneshot_prune_recipe(names, 0.36, "global", init_sparsity=0.2)
    assert "!GlobalMagnitudePruningModifier" in text and "start_epoch: 0.0" in text
    manager = manager_from_yaml(text)  # keep a reference: a collected manager clears its list
    modifier = manager.modifiers[0]
    assert type(modifier).__name__ == "GlobalMagnitudePruningModifier"
    assert (modifier.init_sparsity, modifier.final_sparsity) == (0.2, 0.36)
    assert (modifier.start_epoch, modifier.end_epoch) == (0.0, 1.0) and modifier.params == names
    layerwise = oneshot_prune_recipe(names, {names[0]: 0.25, names[1]: 0.5}, "layerwise",
                                     init_sparsity="__FROM_PARAM__")
    manager = manager_from_yaml(layerwise)
    modifier = manager.modifiers[0]
    assert type(modifier).__name__ == "MagnitudePruningModifier"
    assert modifier.final_sparsity == {0.25: [names[0]], 0.5: [names[1]]}
    manager = manager_from_yaml(constant_pruning_recipe(names))
    constant = manager.modifiers[0]
    assert type(constant).__name__ == "ConstantPruningModifier" and constant.params == names


def test_known_modifiers_and_did_you_mean():
    known = known_modifier_names()
    for name in ("GlobalMagnitudePruningModifier", "MagnitudePruningModifier", "GMPruningModifier",
                 "ConstantPruningModifier", "EpochRangeModifier", "LearningRateFunctionModifier"):
        assert name in known
    validate_modifier_tags(["!ConstantPruningModifier", "EpochRangeModifier"])
    with pytest.raises(RecipeError, match="did you mean '!ConstantPruningModifier'"):
        validate_modifier_tags(["!ConstantPruningModifer"])


@pytest.mark.parametrize("distribution", ["global", "layerwise", Ranking("global", "block4"),
                                          Ranking("layerwise", "block4")])
def test_sparseml_prune_equals_pure_prune(distribution, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    model = tiny_model()
    names = select_prunable(model)
    before = {n: v.clone() for n, v in model.state_dict().items()}
    mask = dense_mask(model, names)
    for _ in range(3):
        weights = {n: v.clone() for n, v in model.state_dict().items()}
        expected = magnitude_prune(weights, mask, 0.2, distribution)
        new = sparseml_prune(model, mask, 0.2, distribution, tmp_path / "logs")
        assert all(torch.equal(new[n], expected[n]) for n in names)
        assert all(torch.equal(new[n], m) for n, m in mask_from_model(model, names).items())
        assert is_nested(mask, new)
        mask = new
    for name, value in model.state_dict().items():
        if name not in names:
            assert torch.equal(value, before[name])  # SparseML touched only the prunable set
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    assert abs(1 - kept / total - (1 - 0.8 ** 3)) < 1e-3
    assert not (tmp_path / "sparse_logs").exists() and (tmp_path / "logs").is_dir()


def test_gmp_reaches_target_then_finalize_regrows_without_holder(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    model = tiny_model()
    names = select_prunable(model, scope="backbone")
    recipe = "\n".join([
        "modifiers:", "  - !GMPruningModifier", "    init_sparsity: 0.05",
        "    final_sparsity: 0.5", "    start_epoch: 0.0", "    end_epoch: 1.0",
        "    update_frequency: 0.5", f"    params: {names}"]) + "\n"
    optimizer = sgd(model)
    manager, stepper = gmp_manager(recipe, model, optimizer, steps_per_epoch=2, log_dir=tmp_path)
    train_steps(model, stepper, 4)
    mask = mask_from_model(model, names)
    for name in names:
        assert int((~mask[name]).sum()) == round(0.5 * mask[name].numel())
    manager.finalize(model)
    train_steps(model, optimizer, 1)  # the pitfall: plain steps after finalize regrow
    assert pruned_nonzero(model, mask) > 0
    assert not (tmp_path / "sparse_logs").exists()


def test_constant_pruning_and_holder_keep_zeros(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model()
    names = select_prunable(model)
    mask = sparseml_prune(model, dense_mask(model, names), 0.5, "global", tmp_path)
    manager, stepper = gmp_manager(constant_pruning_recipe(names), model, sgd(model),
                                   steps_per_epoch=2, log_dir=tmp_path)
    counts = []
    train_steps(model, stepper, 2, after_each=lambda: counts.append(pruned_nonzero(model, mask)))
    manager.finalize(model)
    assert counts == [0, 0]
    holder = MaskHolder(model, mask)
    optimizer = sgd(model)
    train_steps(model, optimizer, 2, after_each=holder.after_step)
    assert holder.check(model) == 0 and pruned_nonzero(model, mask) == 0
    holder.remove()
