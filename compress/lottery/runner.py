"""The lottery runner: a short loop over rounds (open_lth's levels).

Round 0 trains (dense, or under a transferred mask) and keeps the weights at the rewind point.
Round k >= 1 prunes a fraction of the remaining prunable weights of round k-1's final weights by
magnitude through SparseML, rewinds the survivors to the rewind point and retrains with the mask
held. Finished rounds (their metrics.json exists) are skipped; a round in progress resumes from
its last epoch checkpoint. After a round named in `control_rounds` its controls train
(compress.lottery.controls), each skipped when done and resumed like a round.
"""
from __future__ import annotations

import logging
import shutil
import time
from typing import Any

import torch
from torch import nn

from compress.core.checkpoint import load_checkpoint, save_checkpoint
from compress.core.distributed import rank_mask_digests, rank_replica_digests
from compress.core.durations import format_duration
from compress.lottery.controls import run_controls, run_replicates
from compress.lottery.distributions import Distribution, for_recipe
from compress.lottery.masks import Ranking, early_bird_iou, is_nested, load_mask, mask_iou, rewind
from compress.lottery.rounds import (LotteryContext, LotterySetup, finish, modifier_stepper, train_held,
                                     train_unless_done)
from compress.training.round import RoundPlan

log = logging.getLogger(__name__)


def run_lottery(setup: LotterySetup, ctx: LotteryContext) -> list[dict[str, Any]]:
    """Run (or resume) every round; return the per-round records of summary.json.

    Under torchrun every rank trains (DDP) and prunes; rank 0's mask is broadcast and checked
    against each rank's own, rank 0 writes and evaluates, barriers keep the ranks in step.
    """
    records: list[dict[str, Any]] = []
    spent_s: list[float] = []
    for index in range(setup.pruning_rounds + 1):
        record = train_unless_done(ctx.run.round(index), ctx,
                                   lambda: _timed_round(index, setup, ctx, spent_s))
        if setup.controls and index in setup.control_rounds:
            record["controls"] = run_controls(index, setup.controls, setup, ctx)
        if setup.seeds and index in setup.seed_rounds:
            record["replicates"] = run_replicates(index, setup.seeds, setup, ctx)
        records.append(record)
        if ctx.dist.is_main:
            ctx.run.update_summary(rounds=records)
    return records


def _timed_round(index: int, setup: LotterySetup, ctx: LotteryContext, spent_s: list[float]) -> None:
    tick = time.monotonic()
    _run_round(index, setup, ctx)
    spent_s.append(time.monotonic() - tick)
    _log_progress(index, setup.pruning_rounds, spent_s)


def _log_progress(index: int, pruning_rounds: int, spent_s: list[float]) -> None:
    """"round 2 of 6 done in 44 s; about 2 min 48 s left (4 rounds)": the mean of the rounds this
    process trained, times the rounds left (controls not counted)."""
    left = pruning_rounds - index
    eta = left * sum(spent_s) / len(spent_s)
    log.info("round %d of %d done in %s%s", index + 1, pruning_rounds + 1, format_duration(spent_s[-1]),
             f"; about {format_duration(eta)} left ({left} round{'s' * (left != 1)})" if left else "")


def _run_round(index: int, setup: LotterySetup, ctx: LotteryContext) -> None:
    folder = ctx.run.round(index)
    torch.manual_seed(ctx.seed)
    model = ctx.model_factory().to(ctx.device)
    extra: dict[str, Any] = {}
    if index == 0:
        mask = setup.method.initial_mask(model, setup.lottery, setup.prunable)
        start = 0
        rewind_at = setup.rewind_iteration if setup.pruning_rounds else None
    else:
        mask, extra = _prune_and_rewind(index, setup, ctx, model)
        start, rewind_at = setup.rewind_iteration, None
    total = ctx.schedule.total_iterations
    plan = RoundPlan(start_iteration=start, rewind_iteration=rewind_at,
                     snapshot_iteration=start + (total - start) // 2 if setup.early_bird else None,
                     optimizer_wrapper=modifier_stepper(setup, folder),
                     lr_from_modifiers=setup.lr_from_modifiers)
    outcome, nonzero = train_held(model, mask, folder, plan, ctx, ctx.seed, f"round {index}",
                                  round=index)
    if nonzero is not None:
        extra["pruned_nonzero_after_training"] = nonzero
    if mask is None:  # dense training keeps every weight; gradual: the zeros training left
        mask = setup.method.round0_mask(model, setup.prunable)
    if ctx.dist.enabled:  # the DDP replicas must have trained to the same weights
        digests = rank_replica_digests(ctx.dist, model)
        if len(set(digests)) != 1:
            raise RuntimeError(f"round {index}: the ranks' trained weights differ ({digests})")
        extra["rank_weight_digests"] = digests
    scores = ctx.evaluate(model, folder)  # every rank predicts its share; rank 0 scores
    if ctx.dist.is_main:
        _finish_round(index, setup, ctx, model, mask, outcome, {**scores, **extra})


def _prune_and_rewind(index: int, setup: LotterySetup, ctx: LotteryContext,
                      model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    previous = ctx.run.round(index - 1)
    model.load_state_dict(load_checkpoint(previous.checkpoint)["model"])
    old_mask = load_mask(previous.mask, model)
    log_dir = ctx.run.round(index).rank_sparse_logs(ctx.dist.rank)
    mask = setup.method.prune(model, old_mask, setup.fraction, setup.distribution, log_dir,
                              setup.allocate)
    extra: dict[str, Any] = dict(setup.allocate.last_record) if setup.allocate else {}
    if ctx.dist.enabled:  # every rank pruned the same weights; rank 0's mask is the one used
        digests = rank_mask_digests(ctx.dist, mask)
        if len(set(digests)) != 1:
            raise RuntimeError(f"round {index}: the ranks computed different masks ({digests})")
        mask = ctx.dist.broadcast(mask)
        extra["rank_mask_digests"] = digests
        if not ctx.dist.is_main:
            shutil.rmtree(log_dir, ignore_errors=True)
    if not is_nested(old_mask, mask):
        raise RuntimeError(f"round {index}: the new mask is not nested in round {index - 1}'s")
    rewind_state = load_checkpoint(ctx.run.round(0).rewind)["model"]
    rewind(model, rewind_state, mask)
    return mask, {"mask_iou_with_previous": mask_iou(old_mask, mask), **extra}


def _finish_round(index: int, setup: LotterySetup, ctx: LotteryContext, model: nn.Module,
                  mask: dict[str, torch.Tensor], outcome: dict[str, Any], extra: dict[str, Any]) -> None:
    folder = ctx.run.round(index)
    captured = outcome["captured"]
    if "rewind" in captured:
        save_checkpoint(folder.rewind, model=captured["rewind"], iteration=setup.rewind_iteration)
    if setup.early_bird and "snapshot" in captured and index < setup.pruning_rounds:
        final = dict(model.named_parameters())
        snap = captured["snapshot"]
        extra["early_bird_iou"] = early_bird_iou({n: snap[n] for n in mask},
                                                 {n: final[n].detach() for n in mask},
                                                 mask, setup.fraction, _ranking(setup.distribution))
    finish(folder, model, mask, {**extra, "val_loss": outcome["val_loss"]}, what=f"round {index}",
           header={"round": index}, stamp={"round": index}, sparsity_file=True)


def _ranking(distribution: str | Distribution) -> Ranking:
    """The magnitude ranking an early-bird check compares (the run's distribution's: runtime
    allocates a global count; block4 ranks blocks)."""
    return for_recipe(distribution).ranking

