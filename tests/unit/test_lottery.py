"""The lottery runner end to end on a tiny Mask R-CNN.

Every run goes through the real runner (`compress.run.pipeline.find_ticket`: recipe -> data -> model ->
`run_lottery` -> SparseML prune -> rewind -> `train_round`). Probes are attached by wrapping the
runner's own seams: `compress.lottery.rounds.train_round` (the model as the round starts, after every
optimizer step) and `compress.lottery.sparseml_adapter.sparseml_prune` (parameters before and after the
prune). Expected values come from exact arithmetic on the saved masks and checkpoints.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from support.recipes import TINY_LOTTERY

import compress.lottery.rounds as rounds
import compress.lottery.sparseml_adapter as adapter
from compress.run import pipeline as pipeline
from compress.recipe.load import load_recipe
from compress.core.folders import RunFolder
from compress.core.seeding import seed_everything

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "maskrcnn_lth.yaml"
ROUNDS = 3
TINY = TINY_LOTTERY
REWIND_IT = 2


@dataclass
class Probe:
    """What the runner's model looked like: at each round's start and after every step."""

    start: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    nonzero: dict[int, list[dict[str, torch.Tensor]]] = field(default_factory=dict)
    at_rewind: dict[str, torch.Tensor] | None = None
    prunes: list[dict[str, Any]] = field(default_factory=list)


def _attach(monkeypatch: pytest.MonkeyPatch, probe: Probe) -> None:
    real_train, real_prune = rounds.train_round, adapter.sparseml_prune

    def train_round(model, folder, schedule, plan, *args, **kwargs):
        index = int(folder.root.name.split("_")[1])
        probe.start[index] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        probe.nonzero[index] = []

        def after_step(iteration: int) -> None:
            params = dict(model.named_parameters())
            probe.nonzero[index].append({n: p.detach() != 0 for n, p in params.items()})
            if index == 0 and iteration == REWIND_IT:
                probe.at_rewind = {k: v.detach().clone() for k, v in model.state_dict().items()}
        plan.after_step.append(after_step)  # after the runner's own (the MaskHolder's) callbacks
        return real_train(model, folder, schedule, plan, *args, **kwargs)

    def sparseml_prune(model, mask, *args, **kwargs):
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        new = real_prune(model, mask, *args, **kwargs)
        after = {k: v.detach().clone() for k, v in model.state_dict().items()}
        probe.prunes.append({"old": {n: m.clone() for n, m in mask.items()}, "new": new,
                             "before": before, "after": after})
        return new

    monkeypatch.setattr(rounds, "train_round", train_round)
    monkeypatch.setattr(adapter, "sparseml_prune", sparseml_prune)


def run_tiny(root: Path, overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[RunFolder, Probe]:
    torch.set_num_threads(1)
    probe = Probe()
    _attach(monkeypatch, probe)
    recipe = load_recipe(RECIPE, smoke=True, overrides=TINY + overrides)
    run = RunFolder(root)
    root.mkdir(parents=True, exist_ok=True)
    seed_everything(recipe.train.seed)
    pipeline.find_ticket(recipe, run, False)
    monkeypatch.undo()
    return run, probe


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def kept_count(mask: dict[str, torch.Tensor]) -> int:
    return sum(int(m.sum()) for m in mask.values())


@pytest.fixture(scope="module")
def global_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, Probe]:
    with pytest.MonkeyPatch.context() as mp:
        return run_tiny(tmp_path_factory.mktemp("global"), [f"lottery.rounds={ROUNDS}",
                                                           "lottery.distribution=global"], mp)


@pytest.fixture(scope="module")
def layerwise_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, Probe]:
    with pytest.MonkeyPatch.context() as mp:
        return run_tiny(tmp_path_factory.mktemp("layerwise"), [f"lottery.rounds={ROUNDS}",
                                                              "lottery.distribution=layerwise"], mp)


def masks_of(run: RunFolder, rounds: int = ROUNDS) -> list[dict[str, torch.Tensor]]:
    return [load(run.round(k).root / "mask.pt") for k in range(rounds + 1)]


def assert_zeros_held(probe: Probe, index: int, mask: dict[str, torch.Tensor], steps: int) -> None:
    """After every optimizer step of the round, every pruned weight was exactly 0."""
    assert len(probe.nonzero[index]) == steps
    for step, nonzero in enumerate(probe.nonzero[index], 1):
        moved = sum(int((nonzero[n] & ~m).sum()) for n, m in mask.items())
        assert moved == 0, f"round {index} step {step}: {moved} pruned weights not 0"


def test_global_imp_sparsity_per_round(global_run):
    run, _ = global_run
    for k in range(ROUNDS + 1):
        report = json.loads((run.round(k).root / "sparsity.json").read_text())
        assert report["prunable"]["sparsity"] == pytest.approx(1 - 0.8 ** k, abs=1e-3)
        mask = load(run.round(k).root / "mask.pt")
        numel = sum(m.numel() for m in mask.values())
        assert 1 - kept_count(mask) / numel == pytest.approx(1 - 0.8 ** k, abs=1e-3)
    ticket = load(run.ticket)
    final = load(run.round(ROUNDS).root / "mask.pt")
    assert ticket["round"] == ROUNDS and set(ticket["mask"]) == set(final)
    assert all(torch.equal(ticket["mask"][n], final[n]) for n in final)


def test_global_masks_nested_one_threshold_counts_exact(global_run):
    run, _ = global_run
    masks = masks_of(run)
    assert all(bool(m.all()) for m in masks[0].values())  # round 0 trains dense
    for k in range(1, ROUNDS + 1):
        old, new = masks[k - 1], masks[k]
        assert not any(bool((new[n] & ~old[n]).any()) for n in new), f"round {k} not nested"
        kept = kept_count(old)
        assert kept_count(new) == kept - round(0.2 * kept)
        weights = load(run.round(k - 1).root / "checkpoint.pt")["model"]
        dropped = torch.cat([weights[n][old[n] & ~new[n]].abs() for n in new])
        survivors = torch.cat([weights[n][new[n]].abs() for n in new])
        assert dropped.max() <= survivors.min()  # one threshold over every tensor
    layer_sparsity = {round(1 - float(m.float().mean()), 6) for m in masks[ROUNDS].values()}
    assert len(layer_sparsity) > 1, "global pruning gave every tensor the same sparsity"


def test_pruned_weights_zero_after_every_step(global_run):
    run, probe = global_run
    masks = masks_of(run)
    assert_zeros_held(probe, 0, masks[0], 8)
    for k in range(1, ROUNDS + 1):
        assert_zeros_held(probe, k, masks[k], 8 - REWIND_IT)
        final = load(run.round(k).root / "checkpoint.pt")["model"]
        assert all(bool((final[n][~m] == 0).all()) for n, m in masks[k].items())


def test_rewind_point_and_surviving_weights_after_rewind(global_run):
    run, probe = global_run
    rewind = load(run.round(0).root / "rewind.pt")["model"]
    assert probe.at_rewind is not None
    assert all(torch.equal(rewind[k], v) for k, v in probe.at_rewind.items())
    for k, mask in enumerate(masks_of(run)[1:], 1):
        start = probe.start[k]
        assert set(start) == set(rewind)
        for name, value in start.items():
            if name in mask:
                assert torch.equal(value[mask[name]], rewind[name][mask[name]]), name
                assert bool((value[~mask[name]] == 0).all()), name
            else:  # biases, norms, buffers, final predictors: the rewind point's exactly
                assert torch.equal(value, rewind[name]), name


def test_pruner_only_zeros_prunable_weights(global_run):
    run, probe = global_run
    assert len(probe.prunes) == ROUNDS
    names = set(masks_of(run)[0])
    assert not any(n.endswith(".bias") or ".bn" in n or "downsample" in n
                   or "box_predictor" in n or "mask_fcn_logits" in n for n in names)
    for prune in probe.prunes:
        before, after, new = prune["before"], prune["after"], prune["new"]
        for name, value in before.items():
            if name not in new:
                assert torch.equal(after[name], value), f"pruner changed {name}"
                continue
            was_kept = prune["old"][name]
            assert torch.equal(after[name][new[name]], value[new[name]])
            assert bool((after[name][~new[name]] == 0).all())
            assert not bool((new[name] & ~was_kept).any()), name


def test_layerwise_every_tensor_exact(layerwise_run):
    run, probe = layerwise_run
    masks = masks_of(run)
    for k in range(1, ROUNDS + 1):
        weights = load(run.round(k - 1).root / "checkpoint.pt")["model"]
        for name, new in masks[k].items():
            old = masks[k - 1][name]
            kept = int(old.sum())
            assert int(new.sum()) == kept - round(0.2 * kept), name
            assert not bool((new & ~old).any())
            dropped, survivors = weights[name][old & ~new].abs(), weights[name][new].abs()
            assert dropped.max() <= survivors.min(), name
        assert_zeros_held(probe, k, masks[k], 8 - REWIND_IT)
    for name, mask in masks[ROUNDS].items():
        assert 1 - float(mask.float().mean()) == pytest.approx(1 - 0.8 ** ROUNDS, abs=0.02), name
    summary = json.loads(run.summary_path.read_text())
    assert [r["round"] for r in summary["rounds"]] == list(range(ROUNDS + 1))


def test_mask_transfer_keeps_exact_top_k(tmp_path, monkeypatch):
    from compress.models.build import TinyResNet

    torch.manual_seed(123)
    source = TinyResNet(torch.nn.BatchNorm2d).state_dict()  # classification names: layer1.0...
    torch.save(source, tmp_path / "source.pt")
    run, probe = run_tiny(tmp_path / "run", [
        "lottery.method=mask_transfer", f"lottery.source={tmp_path / 'source.pt'}",
        "lottery.target_sparsity=0.5", "lottery.scope=backbone", "lottery.rounds=1"], monkeypatch)
    mask = load(run.round(0).root / "mask.pt")
    src = {n: source[n[len("backbone.body."):]] for n in mask}
    numel = sum(t.numel() for t in src.values())
    assert kept_count(mask) == numel - round(0.5 * numel)
    kept = torch.cat([src[n][m].abs() for n, m in mask.items()])
    dropped = torch.cat([src[n][~m].abs() for n, m in mask.items()])
    assert dropped.max() < kept.min()  # exactly the top-k source magnitudes
    for name, m in mask.items():  # training starts from the source values, the rest zero
        assert torch.equal(probe.start[0][name][m], src[name][m])
        assert bool((probe.start[0][name][~m] == 0).all())
    assert_zeros_held(probe, 0, mask, 8)
    final = load(run.round(0).root / "checkpoint.pt")["model"]
    assert all(bool((final[n][~m] == 0).all()) for n, m in mask.items())
    assert not (run.round(1).root).exists()


def test_transfer_ticket_zeros_stay_zero(global_run, tmp_path, monkeypatch):
    parent, _ = global_run
    ticket = load(parent.ticket)
    run, probe = run_tiny(tmp_path / "run", ["lottery.method=transfer_ticket",
                                            f"lottery.source={parent.ticket}"], monkeypatch)
    mask = load(run.round(0).root / "mask.pt")
    assert set(mask) == set(ticket["mask"])
    assert all(torch.equal(mask[n], ticket["mask"][n]) for n in mask)
    for name, m in mask.items():
        assert torch.equal(probe.start[0][name], ticket["model"][name])
    assert_zeros_held(probe, 0, mask, 8)
    final = load(run.round(0).root / "checkpoint.pt")["model"]
    assert all(bool((final[n][~m] == 0).all()) for n, m in mask.items())
    metrics = json.loads((run.round(0).root / "metrics.json").read_text())
    assert metrics["prunable_sparsity"] == pytest.approx(1 - 0.8 ** ROUNDS, abs=1e-3)
