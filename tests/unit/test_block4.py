"""`lottery.mask_type: block4`: whole blocks of 4 consecutive input channels pruned in IMP rounds.

The pure pruner (`compress.lottery.masks.magnitude_prune` with a block4 `Ranking`) must equal
SparseML's FourBlockMaskCreator, leave every block all kept or all pruned, remove the whole blocks
nearest to round(fraction * kept weights); the SparseML adapter giving the same masks is
tests/unit/test_sparseml_adapter.py's `test_sparseml_prune_equals_pure_prune`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.cli import main
from compress.lottery.masks import (MaskHolder, Ranking, block_count, blocks_of, dense_mask,
                                    early_bird_iou, is_nested, magnitude_prune, mask_from_model, rewind)
from compress.lottery.sparseml_adapter import sparseml_prune
from compress.models.build import build_model
from compress.models.prunable import select_prunable
from support.tiny_training import sgd, train_steps

SHAPES = [(8, 6, 3, 3), (5, 8), (4, 3, 7, 7), (6, 13, 1, 1), (16, 16, 3, 3)]
GOOD = "name: t\nmodel: {arch: maskrcnn, backbone: tiny}\ntrain: {iterations: 10, epochs: null}\n"


def block_structured(weight_or_mask: torch.Tensor) -> bool:
    """Every block of 4 consecutive input channels (at one output channel and kernel position) is
    all True or all False; checked on the tensor itself, not through `blocks_of`."""
    t = weight_or_mask.bool()
    t = t.movedim(1, -1) if t.dim() > 2 else t
    for start in range(0, t.shape[-1], 4):
        block = t[..., start:start + 4]
        if not bool((block.all(-1) | ~block.any(-1)).all()):
            return False
    return True


def random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {f"w{i}": torch.randn(shape, generator=generator) for i, shape in enumerate(SHAPES)}


def sparseml_four_block(tensors: list[torch.Tensor], target: float, global_sparsity: bool):
    from sparseml.pytorch.sparsification.pruning.mask_creator import FourBlockMaskCreator

    masks = FourBlockMaskCreator().create_sparsity_masks([t.abs() for t in tensors], target,
                                                         global_sparsity)
    return [m.bool() for m in masks]


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.77])
def test_layerwise_equals_sparseml_four_block_mask_creator(fraction):
    for name, weight in random_weights().items():
        dense = {name: torch.ones_like(weight, dtype=torch.bool)}
        ours = magnitude_prune({name: weight}, dense, fraction, Ranking("layerwise", "block4"))[name]
        blocks = blocks_of(weight, ours)
        target = (len(blocks.kept) - int(blocks.kept.sum())) / len(blocks.kept)
        theirs = sparseml_four_block([weight], target, False)[0]
        assert torch.equal(ours, theirs), name


def test_global_equals_sparseml_four_block_mask_creator():
    weights = random_weights(1)
    dense = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    ours = magnitude_prune(weights, dense, 0.4, Ranking("global", "block4"))
    pruned = sum(len(blocks_of(w, ours[n]).kept) - int(blocks_of(w, ours[n]).kept.sum())
                 for n, w in weights.items())
    total = sum(len(blocks_of(w, dense[n]).kept) for n, w in weights.items())
    theirs = sparseml_four_block(list(weights.values()), pruned / total, True)
    assert all(torch.equal(ours[n], t) for n, t in zip(weights, theirs))


def test_partial_block_scored_by_the_mean_of_its_channels():
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 5.0]])  # blocks: [1,1,1,1], [0.1,0.1,5]
    assert blocks_of(weight, torch.ones_like(weight, dtype=torch.bool)).scores.tolist() == \
        pytest.approx([1.0, 5.2 / 3])
    mask = magnitude_prune({"w": weight}, {"w": torch.ones(1, 7, dtype=torch.bool)}, 0.5,
                           Ranking("layerwise", "block4"))["w"]
    assert mask.tolist() == [[False] * 4 + [True] * 3]  # the 4-block, mean 1.0 < 1.73


@pytest.mark.parametrize("distribution", ["global", "layerwise"])
def test_rounds_stay_block_structured_nested_and_counted(distribution):
    weights = random_weights(2)
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    ranking = Ranking(distribution, "block4")
    for _ in range(4):
        new = magnitude_prune(weights, mask, 0.3, ranking)
        assert all(block_structured(m) for m in new.values())
        assert is_nested(mask, new)
        groups = [list(mask)] if distribution == "global" else [[n] for n in mask]
        for names in groups:
            kept = sum(int(mask[n].sum()) for n in names)
            removed = kept - sum(int(new[n].sum()) for n in names)
            want = round(0.3 * kept)
            # whole blocks: at most half the largest block (4) away from the weight count
            assert abs(removed - want) <= 2, (names[0], removed, want)
        mask = new


def test_block_count_rounds_to_the_nearest_weights_ties_to_even():
    fours = torch.full((10,), 4)
    assert [block_count(fours, w) for w in range(0, 13)] == [round(w / 4) for w in range(0, 13)]
    mixed = torch.tensor([3, 4, 3])  # reach 0, 3, 7, 10
    assert [block_count(mixed, w) for w in (1, 2, 5, 6, 9, 11, 40)] == [0, 1, 2, 2, 3, 3, 3]
    assert block_count(mixed, 5) == 2  # 3 and 7 both 2 away: the even count


def test_all_4_block_tensor_removes_4_x_round_of_a_quarter():
    weight = torch.randn(8, 16, 3, 3, generator=torch.Generator().manual_seed(3))
    dense = {"w": torch.ones_like(weight, dtype=torch.bool)}
    new = magnitude_prune({"w": weight}, dense, 0.3, Ranking("layerwise", "block4"))["w"]
    assert int((~new).sum()) == 4 * round(round(0.3 * weight.numel()) / 4)


def test_partly_kept_block_is_refused():
    weight = torch.randn(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 1] = False
    with pytest.raises(ValueError, match="not 4-block structured"):
        magnitude_prune({"w": weight}, {"w": mask}, 0.2, Ranking("layerwise", "block4"))


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("maskrcnn", "tiny", 3, min_size=64, max_size=64)


def test_rewind_and_training_keep_the_blocks(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    model = tiny_model()
    names = select_prunable(model)
    rewind_state = {k: v.clone() for k, v in model.state_dict().items()}
    mask = sparseml_prune(model, dense_mask(model, names), 0.5, Ranking("global", "block4"),
                          tmp_path / "logs")
    assert all(block_structured(m) for m in mask_from_model(model, names).values())
    rewind(model, rewind_state, mask)
    holder = MaskHolder(model, mask)
    optimizer = sgd(model)
    train_steps(model, optimizer, 2, after_each=holder.after_step)
    assert holder.check(model) == 0
    zeros = mask_from_model(model, names)
    assert all(block_structured(zeros[n]) and not bool((zeros[n] & ~mask[n]).any()) for n in names)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in mask}
    assert early_bird_iou(weights, weights, mask, 0.2, Ranking("global", "block4")) == 1.0


@pytest.mark.parametrize("lottery,fragment", [
    ("{mask_type: block4, distribution: runtime}",
     "mask_type 'block4' works with distributions global, layerwise, not 'runtime'"),
    ("{mask_type: block4, method: gradual}", "set mask_type on its SparseML pruning modifier"),
    ("{mask_type: block4, method: dense}",
     "mask_type 'block4' prunes the rounds of methods imp, oneshot, not 'dense'"),
    ("{mask_type: block8}", "lottery.mask_type"),
])
def test_block4_recipe_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch, lottery, fragment):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    extra = ("modifiers:\n  - !GMPruningModifier {params: __ALL_PRUNABLE__, init_sparsity: 0.05, "
             "final_sparsity: 0.5, start_epoch: 0.0, end_epoch: 1.0, update_frequency: 0.5}\n"
             if "gradual" in lottery else "")
    path.write_text(GOOD + f"lottery: {lottery}\n" + extra)
    code = main(["run", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert fragment in err and str(path) in err
    assert not (tmp_path / "run").exists()


def test_block4_recipe_loads_for_imp_and_oneshot():
    from compress.recipe.load import load_recipe

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "maskrcnn_lth.yaml"
    assert load_recipe(recipe, smoke=True).lottery.mask_type == "unstructured"
    for method in ("imp", "oneshot"):
        loaded = load_recipe(recipe, smoke=True, overrides=["lottery.mask_type=block4",
                                                            f"lottery.method={method}",
                                                            "lottery.distribution=layerwise"])
        assert loaded.lottery.mask_type == "block4"
    assert json.dumps(loaded.lottery.model_dump())  # the resolved recipe keeps the key


def test_imp_block4_run_prunes_whole_blocks_every_round(tmp_path, monkeypatch):
    """Through the real pipeline: each round's mask.pt and ticket zeros are block-structured,
    nested, and the early-bird check ranked blocks."""
    from support.recipes import TINY_LOTTERY

    from compress.core.seeding import seed_everything
    from compress.recipe.load import load_recipe
    from compress.run import pipeline

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    recipe_path = Path(__file__).resolve().parents[2] / "recipes" / "maskrcnn_lth.yaml"
    recipe = load_recipe(recipe_path, smoke=True, overrides=TINY_LOTTERY + [
        "lottery.rounds=2", "lottery.mask_type=block4", "lottery.distribution=layerwise"])
    run = pipeline.RunFolder(tmp_path / "run")
    run.root.mkdir(parents=True)
    seed_everything(recipe.train.seed)
    pipeline.find_ticket(recipe, run, False)
    masks = [torch.load(run.round(k).root / "mask.pt", weights_only=True) for k in range(3)]
    for old, new in zip(masks, masks[1:]):
        assert is_nested(old, new)
        assert all(block_structured(m) for m in new.values())
        assert sum(int((~m).sum()) for m in new.values()) > sum(int((~m).sum()) for m in old.values())
    ticket = torch.load(run.ticket, weights_only=True)
    assert all(block_structured(ticket["model"][n] != 0) for n in masks[-1])
    metrics = json.loads((run.round(1).root / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["early_bird_iou"] <= 1.0
