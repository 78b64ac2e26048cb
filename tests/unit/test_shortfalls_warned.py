"""Silent shortfalls warned: a gradual run far short of its modifiers' target, and a ticket
transfer (or mask transfer) that matched only part of its source."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from compress.core.seeding import seed_everything
from compress.lottery.transfer import mask_transfer, transfer_ticket
from compress.models.build import build_model
from compress.models.prunable import select_prunable
from compress.recipe.load import load_recipe
from compress.run import pipeline
from compress.core.folders import RunFolder
from compress.run.shortfall import shortfalls
from support.recipes import TINY_LOTTERY

ROOT = Path(__file__).resolve().parents[2]
BODY = "backbone.body."


def _tagged(caplog, check: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "check", None) == check]


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("maskrcnn", "tiny", 3, min_size=64, max_size=64)


def test_transfer_ticket_that_matched_part_warns_with_counts(caplog):
    model = tiny_model()
    state = tiny_model(seed=1).state_dict()
    names = select_prunable(model, scope="all")
    mask = {n: torch.rand(state[n].shape) > 0.5 for n in names}
    keep = names[:5]
    renamed = {(n if n in keep else "other." + n): m for n, m in mask.items()}
    source = {**state, **{"other." + n: state[n] for n in names if n not in keep}}
    with caplog.at_level(logging.WARNING):
        new_mask, matched = transfer_ticket(model, source, renamed)
    assert len(matched) == 5
    (message,) = _tagged(caplog, "partial_transfer")
    total = sum(m.numel() for m in mask.values())
    assert message.startswith(f"transfer ticket: 5 of {len(names)} masked tensors (")
    assert f"of {total / 1e6:.2f}M weights) matched the model by name and shape" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the whole ticket matches: nothing to say
        transfer_ticket(tiny_model(), state, mask)
    assert not _tagged(caplog, "partial_transfer")


def test_mask_transfer_from_a_mostly_unmatched_source_warns(caplog):
    model = tiny_model()
    names = select_prunable(model, scope="backbone")
    source = {k[len(BODY):]: v.clone() for k, v in tiny_model(seed=2).state_dict().items()
              if k.startswith(BODY)}
    with caplog.at_level(logging.WARNING):
        mask_transfer(model, dict(source), names, 0.5)
    assert not _tagged(caplog, "partial_transfer")
    source["head.weight"] = torch.randn(1000, 1000)  # most of the source finds no place
    with caplog.at_level(logging.WARNING):
        mask_transfer(tiny_model(), source, names, 0.5)
    (message,) = _tagged(caplog, "partial_transfer")
    assert f"of {len(source)} source tensors" in message and "head.weight" in message


def test_shortfall_says_reached_target_and_why():
    layers = {"a.weight": {"numel": 100, "zeros": 5}, "b.weight": {"numel": 100, "zeros": 5}}
    target = {"params": "__ALL_PRUNABLE__", "target": 0.8, "end_epoch": 3.0}
    (message,) = shortfalls([target], layers, trained_epochs=1.0)
    assert message == ("gradual pruning reached sparsity 0.05 of target 0.80 over 2 tensors: the "
                       "modifiers' schedule ends at epoch 3 but training ran 1 epochs (lengthen "
                       "train.iterations / train.epochs or end the modifier sooner)")
    assert shortfalls([{**target, "params": ["re:a.*"], "target": 0.07}], layers, 1.0) == []
    assert shortfalls([{**target, "params": ["c.weight"]}], layers, 1.0) == []


def test_gmp_recipe_on_a_short_training_warns(tmp_path, caplog):
    torch.set_num_threads(1)
    recipe = load_recipe(ROOT / "recipes" / "maskrcnn_gmp.yaml", smoke=True, overrides=TINY_LOTTERY)
    run = RunFolder(tmp_path / "run")
    run.root.mkdir(parents=True)
    seed_everything(recipe.train.seed)
    with caplog.at_level(logging.WARNING):
        pipeline.find_ticket(recipe, run, False)
    (message,) = _tagged(caplog, "shortfall")
    assert "of target 0.80" in message
    assert "the modifiers' schedule ends at epoch 3 but training ran 2 epochs" in message


def test_round_progress_says_how_long_is_left(caplog):
    from compress.lottery import runner

    with caplog.at_level(logging.INFO, logger="compress.lottery.runner"):
        runner._log_progress(1, 5, [40.0, 44.0])
        runner._log_progress(5, 5, [40.0])
    assert caplog.messages == ["round 2 of 6 done in 44 s; about 2 min 48 s left (4 rounds)",
                               "round 6 of 6 done in 40 s"]
