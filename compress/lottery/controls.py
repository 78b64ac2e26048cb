"""The controls of the lottery-ticket literature, trained beside a pruning round.

A ticket is only a ticket if it beats these (Frankle & Carbin 2019; open_lth's branches):
- `reinit`: the round's mask on a fresh random initialisation (another seed), trained from the
  rewind iteration like the round (open_lth's `randomly_reinitialize` branch: same budget).
- `random_mask`: a random mask with the round's density in every layer (each layer's kept
  entries shuffled, open_lth's `randomly_prune` branch, `layerwise`), weights from the rewind
  point, trained from the rewind iteration like the round.
- `rewind_to_init`: the round's mask on the weights of iteration 0 (Frankle & Carbin's original
  ticket), trained from iteration 0: the full schedule, as in the original paper.

Each control trains with the round's schedule and data order, is evaluated like a round and lands
in `rounds/round_<k>/controls/<name>/` (checkpoint.pt, mask.pt, metrics.json). A finished control
(metrics.json) is skipped; one in progress resumes from its own last.pt.

Seed replicates (`lottery.seeds` at `lottery.seed_rounds`), for the spread that says whether a gap
is real: at round 0 the dense model again from another seed's initialisation and data order; at a
pruning round the round's ticket (its mask on the rewind weights) retrained from the rewind
iteration with another seed's data order. They land in `rounds/round_<k>/replicates/seed_<s>/`.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from compress.core.atomic import write_json
from compress.core.checkpoint import load_checkpoint, save_checkpoint
from compress.lottery.masks import (Mask, MaskHolder, apply_mask, finished_intact, load_mask, save_mask,
                                    sparsity_report)
from compress.run.folder import NullMetrics
from compress.training.round import RoundPlan, train_round

log = logging.getLogger(__name__)

CONTROL_NAMES = ("reinit", "random_mask", "rewind_to_init")
REINIT_SEED_OFFSET = 1_000_003  # the reinit control's weights come from seed + this
MASK_SEED_OFFSET = 2_000_003  # the random mask's shuffle comes from seed + round + this


def control_dir(round_dir: Path, name: str) -> Path:
    return round_dir / "controls" / name


def replicate_dir(round_dir: Path, seed: int) -> Path:
    return round_dir / "replicates" / f"seed_{seed}"


def random_mask_like(mask: Mapping[str, Tensor], seed: int) -> Mask:
    """A random mask with exactly the same number of kept entries in every tensor as `mask`."""
    gen = torch.Generator().manual_seed(seed)
    out: Mask = {}
    for name in sorted(mask):
        kept = mask[name].bool().cpu()
        flat = torch.zeros(kept.numel(), dtype=torch.bool)
        flat[torch.randperm(kept.numel(), generator=gen)[: int(kept.sum())]] = True
        out[name] = flat.reshape(kept.shape)
    return {name: out[name] for name in mask}


def run_controls(index: int, names: tuple[str, ...], setup: Any, ctx: Any) -> dict[str, Any]:
    """Train (or resume, or skip when done) each control of round `index`; return
    {name: metrics} for summary.json's `rounds[index].controls`."""
    return {name: _trained(index, name, ctx.seed, setup, ctx,
                           control_dir(ctx.run.round_dir(index), name)) for name in names}


def run_replicates(index: int, seeds: tuple[int, ...], setup: Any, ctx: Any) -> dict[str, Any]:
    """Train (or resume, or skip) round `index` again with each seed; return {"seed_<s>": metrics}
    for summary.json's `rounds[index].replicates`."""
    return {f"seed_{seed}": _trained(index, "replicate", seed, setup, ctx,
                                     replicate_dir(ctx.run.round_dir(index), seed)) for seed in seeds}


def _trained(index: int, name: str, seed: int, setup: Any, ctx: Any, out: Path) -> dict[str, Any]:
    done = ctx.dist.broadcast(finished_intact(out) if ctx.dist.is_main else None)
    if not done:
        _run_control(index, name, setup, ctx, out, seed)
    ctx.dist.barrier()
    if ctx.dist.is_main:
        (out / "last.pt").unlink(missing_ok=True)
    return json.loads((out / "metrics.json").read_text())["metrics"]


def _start(index: int, name: str, setup: Any, ctx: Any, model: nn.Module, seed: int
           ) -> tuple[Mask, int]:
    """Load the control's starting weights into `model`; return its mask and start iteration."""
    round_mask = load_mask(ctx.run.round_dir(index) / "mask.pt", model)
    if name == "replicate" and index == 0:  # round 0 again (dense, or its transfer) from `seed`
        torch.manual_seed(seed)
        model.load_state_dict(ctx.model_factory().state_dict())
        start_mask = setup.method.initial_mask(model, setup.lottery, setup.prunable)
        return (round_mask if start_mask is None else start_mask), 0
    if name == "replicate":  # the ticket: its mask on the rewind weights
        model.load_state_dict(load_checkpoint(ctx.run.round_dir(0) / "rewind.pt")["model"])
        return round_mask, setup.rewind_iteration
    if name == "reinit":
        torch.manual_seed(ctx.seed + REINIT_SEED_OFFSET)
        model.load_state_dict(ctx.model_factory().state_dict())
        return round_mask, setup.rewind_iteration
    if name == "rewind_to_init":  # the model as round 0 built it: iteration 0
        return round_mask, 0
    if name == "random_mask":
        model.load_state_dict(load_checkpoint(ctx.run.round_dir(0) / "rewind.pt")["model"])
        return random_mask_like(round_mask, ctx.seed + index + MASK_SEED_OFFSET), setup.rewind_iteration
    raise ValueError(f"unknown control '{name}'; known: {', '.join(CONTROL_NAMES)}")


def _run_control(index: int, name: str, setup: Any, ctx: Any, out: Path, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(ctx.seed)  # the same construction as round 0: iteration-0 weights
    model = ctx.model_factory()
    mask, start = _start(index, name, setup, ctx, model, seed)
    model.to(ctx.device)
    apply_mask(model, mask)
    holder = MaskHolder(model, mask)
    plan = RoundPlan(start_iteration=start, after_step=[holder.after_step],
                     optimizer_wrapper=setup.modifiers(out / "sparse_logs") if setup.modifiers else None,
                     lr_from_modifiers=setup.lr_from_modifiers)
    what = f"seed {seed} replicate" if name == "replicate" else f"control {name}"
    log.info("round %d %s: training iterations %d-%d", index, what, start,
             ctx.schedule.total_iterations)
    fields = {"control": name} if name != "replicate" else {"replicate_seed": seed}
    metrics = ctx.metrics.with_fields(round=index, **fields) if ctx.dist.is_main else NullMetrics()
    outcome = train_round(model, out, ctx.schedule, plan, ctx.loaders, ctx.device, seed,
                          metrics, ctx.progress, ctx.dist)
    nonzero = holder.check(model)
    holder.remove()
    scores = ctx.evaluate(model, out)
    if not ctx.dist.is_main:
        return
    save_checkpoint(out / "checkpoint.pt", model=model.state_dict(), round=index, control=name,
                    seed=seed)
    save_mask(out / "mask.pt", mask)
    sparsity = sparsity_report(model, mask)
    record = {**scores, "val_loss": outcome["val_loss"], "pruned_nonzero_after_training": nonzero}
    write_json(out / "metrics.json", {"round": index, "control": name, "seed": seed,
                                      "start_iteration": start,
                                      "sparsity": sparsity["network"]["sparsity"],
                                      "prunable_sparsity": sparsity["prunable"]["sparsity"],
                                      "metrics": record})
    (out / "last.pt").unlink(missing_ok=True)
    shutil.rmtree(out / "sparse_logs", ignore_errors=True)
    log.info("round %d %s done: %s", index, what,
             {k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
