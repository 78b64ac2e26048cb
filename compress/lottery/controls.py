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

Each is one entry of `CONTROLS` (how it starts); adding a control is one entry there.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from compress.core.checkpoint import load_checkpoint
from compress.core.folders import RoundFolder, replicate_key
from compress.lottery.masks import Mask, load_mask
from compress.lottery.rounds import (LotteryContext, LotterySetup, finish, modifier_stepper, train_held,
                                     train_unless_done)
from compress.training.round import RoundPlan

REINIT_SEED_OFFSET = 1_000_003  # the reinit control's weights come from seed + this
MASK_SEED_OFFSET = 2_000_003  # the random mask's shuffle comes from seed + round + this


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


@dataclass(frozen=True)
class Start:
    """What a control starts from: round `index`'s mask, and `model` as round 0 built it
    (iteration-0 weights) for the control to load its own weights into."""

    index: int
    setup: LotterySetup
    ctx: LotteryContext
    model: nn.Module
    round_mask: Mask
    seed: int  # the replicate's seed (the run's seed for a control)

    def fresh_weights(self, seed: int) -> None:
        """A new random initialisation from `seed`."""
        torch.manual_seed(seed)
        self.model.load_state_dict(self.ctx.model_factory().state_dict())

    def rewind_weights(self) -> None:
        """The weights at the rewind point (round 0's rewind.pt)."""
        self.model.load_state_dict(load_checkpoint(self.ctx.run.round(0).rewind)["model"])


def _reinit(s: Start) -> tuple[Mask, int]:
    s.fresh_weights(s.ctx.seed + REINIT_SEED_OFFSET)
    return s.round_mask, s.setup.rewind_iteration


def _random_mask(s: Start) -> tuple[Mask, int]:
    s.rewind_weights()
    return random_mask_like(s.round_mask, s.ctx.seed + s.index + MASK_SEED_OFFSET), s.setup.rewind_iteration


def _rewind_to_init(s: Start) -> tuple[Mask, int]:
    return s.round_mask, 0  # the model as round 0 built it: iteration 0


def _replicate(s: Start) -> tuple[Mask, int]:
    if s.index == 0:  # round 0 again (dense, or its transfer) from the replicate's seed
        s.fresh_weights(s.seed)
        start_mask = s.setup.method.initial_mask(s.model, s.setup.lottery, s.setup.prunable)
        return (s.round_mask if start_mask is None else start_mask), 0
    s.rewind_weights()  # the ticket: its mask on the rewind weights
    return s.round_mask, s.setup.rewind_iteration


@dataclass(frozen=True)
class Control:
    name: str
    description: str
    start: Callable[[Start], tuple[Mask, int]]  # loads the weights; (mask, start iteration)
    in_recipe: bool = True  # `lottery.controls` may name it (a replicate is `lottery.seeds`)


CONTROLS: dict[str, Control] = {c.name: c for c in (
    Control("reinit", "the round's mask on a fresh random initialisation, from the rewind iteration",
            _reinit),
    Control("random_mask", "a random mask of the round's density per layer on the rewind weights",
            _random_mask),
    Control("rewind_to_init", "the round's mask on the iteration-0 weights, the full schedule",
            _rewind_to_init),
    Control("replicate", "round 0 again from another seed, or the round's ticket retrained",
            _replicate, in_recipe=False),
)}
CONTROL_NAMES = tuple(name for name, c in CONTROLS.items() if c.in_recipe)


@dataclass(frozen=True)
class _Job:
    """One control or seed replicate of round `index`."""

    index: int
    control: Control
    seed: int  # its data order (the run's seed for a control)
    out: RoundFolder
    what: str  # for the log: "round 2 control reinit"
    fields: dict[str, Any]  # its metrics-log fields


def run_controls(index: int, names: tuple[str, ...], setup: LotterySetup, ctx: LotteryContext
                 ) -> dict[str, Any]:
    """Train (or resume, or skip when done) each control of round `index`; return
    {name: metrics} for summary.json's `rounds[index].controls`."""
    return {name: _trained(_Job(index, _control(name), ctx.seed, ctx.run.round(index).control(name),
                                f"round {index} control {name}", {"control": name}), setup, ctx)
            for name in names}


def run_replicates(index: int, seeds: tuple[int, ...], setup: LotterySetup, ctx: LotteryContext
                   ) -> dict[str, Any]:
    """Train (or resume, or skip) round `index` again with each seed; return {"seed_<s>": metrics}
    for summary.json's `rounds[index].replicates`."""
    return {replicate_key(seed): _trained(_Job(index, CONTROLS["replicate"], seed,
                                          ctx.run.round(index).replicate(seed),
                                          f"round {index} seed {seed} replicate",
                                          {"replicate_seed": seed}), setup, ctx)
            for seed in seeds}


def _control(name: str) -> Control:
    if name not in CONTROL_NAMES:
        raise ValueError(f"unknown control '{name}'; known: {', '.join(CONTROL_NAMES)}")
    return CONTROLS[name]


def _trained(job: _Job, setup: LotterySetup, ctx: LotteryContext) -> dict[str, Any]:
    return train_unless_done(job.out, ctx, lambda: _run_control(job, setup, ctx))["metrics"]


def _run_control(job: _Job, setup: LotterySetup, ctx: LotteryContext) -> None:
    torch.manual_seed(ctx.seed)  # the same construction as round 0: iteration-0 weights
    model = ctx.model_factory()
    round_mask = load_mask(ctx.run.round(job.index).mask, model)
    mask, start = job.control.start(Start(job.index, setup, ctx, model, round_mask, job.seed))
    model.to(ctx.device)
    plan = RoundPlan(start_iteration=start, optimizer_wrapper=modifier_stepper(setup, job.out),
                     lr_from_modifiers=setup.lr_from_modifiers)
    outcome, nonzero = train_held(model, mask, job.out, plan, ctx, job.seed, job.what,
                                  round=job.index, **job.fields)
    scores = ctx.evaluate(model, job.out)
    if ctx.dist.is_main:
        stamp = {"round": job.index, "control": job.control.name, "seed": job.seed}
        finish(job.out, model, mask, {**scores, "val_loss": outcome["val_loss"],
                                      "pruned_nonzero_after_training": nonzero}, what=job.what,
               header={**stamp, "start_iteration": start}, stamp=stamp)
