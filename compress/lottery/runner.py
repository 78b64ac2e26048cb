"""The lottery runner: a short loop over rounds (open_lth's levels).

Round 0 trains (dense, or under a transferred mask) and keeps the weights at the rewind point.
Round k >= 1 prunes a fraction of the remaining prunable weights of round k-1's final weights by
magnitude through SparseML, rewinds the survivors to the rewind point and retrains with the mask
held. Finished rounds (their metrics.json exists) are skipped; a round in progress resumes from
its last epoch checkpoint. After a round named in `control_rounds` its controls train
(compress.lottery.controls), each skipped when done and resumed like a round.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from compress.core.atomic import write_json
from compress.core.checkpoint import load_checkpoint, save_checkpoint
from compress.core.durations import format_duration
from compress.lottery.controls import run_controls, run_replicates
from compress.lottery.masks import (MaskHolder, early_bird_iou, finished_intact, is_nested, load_mask,
                                    mask_iou, Ranking, rewind, save_mask, sparsity_report)
from compress.lottery.distributions import Distribution, for_recipe
from compress.lottery.methods import Method
from compress.lottery.runtime_aware import RuntimeAllocator
from compress.training.round import RoundPlan, Schedule, train_round
from compress.core.distributed import SINGLE, Dist, rank_mask_digests, rank_replica_digests
from compress.run.folder import MetricsLog, NullMetrics, RunFolder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LotterySetup:
    method: Method
    lottery: Any  # the recipe's lottery section, for the method's round-0 start
    pruning_rounds: int
    fraction: float  # of the remaining weights, per pruning round
    distribution: str  # global | layerwise | runtime
    prunable: tuple[str, ...]
    rewind_iteration: int
    early_bird: bool = True
    # SparseML modifiers driving every round's training: log_dir -> the train loop's optimizer wrapper
    modifiers: Optional[Callable[[Path], Callable]] = None
    lr_from_modifiers: bool = False  # the modifiers set the learning rate
    allocate: Optional[RuntimeAllocator] = None  # distribution runtime: zeros per layer
    controls: tuple[str, ...] = ()  # compress.lottery.controls.CONTROL_NAMES
    control_rounds: tuple[int, ...] = ()  # the pruning rounds that train the controls
    seeds: tuple[int, ...] = ()  # seed replicates (compress.lottery.controls.run_replicates)
    seed_rounds: tuple[int, ...] = (0,)  # the rounds that train them


@dataclass
class LotteryContext:
    """Everything a round needs besides the setup (built by the pipeline)."""

    run: RunFolder
    schedule: Schedule
    loaders: dict[str, Any]
    device: torch.device
    seed: int
    metrics: MetricsLog
    model_factory: Callable[[], nn.Module]
    evaluate: Callable[[nn.Module, Path], dict[str, Any]]
    progress: bool = True
    dist: Dist = SINGLE  # under torchrun: every rank trains, rank 0 writes


def run_lottery(setup: LotterySetup, ctx: LotteryContext) -> list[dict[str, Any]]:
    """Run (or resume) every round; return the per-round records of summary.json.

    Under torchrun every rank trains (DDP) and prunes; rank 0's mask is broadcast and checked
    against each rank's own, rank 0 writes and evaluates, barriers keep the ranks in step.
    """
    records, spent_s = [], []
    for index in range(setup.pruning_rounds + 1):
        round_dir = ctx.run.round_dir(index)
        done = ctx.dist.broadcast(finished_intact(round_dir) if ctx.dist.is_main else None)
        if not done:
            tick = time.monotonic()
            _run_round(index, setup, ctx)
            spent_s.append(time.monotonic() - tick)
            _log_progress(index, setup.pruning_rounds, spent_s)
        ctx.dist.barrier()
        if ctx.dist.is_main:
            (round_dir / "last.pt").unlink(missing_ok=True)  # a kill after metrics.json left it
        record = _round_record(index, round_dir)
        if setup.controls and index in setup.control_rounds:
            record["controls"] = run_controls(index, setup.controls, setup, ctx)
        if setup.seeds and index in setup.seed_rounds:
            record["replicates"] = run_replicates(index, setup.seeds, setup, ctx)
        records.append(record)
        if ctx.dist.is_main:
            ctx.run.update_summary(rounds=records)
    return records


def _log_progress(index: int, pruning_rounds: int, spent_s: list[float]) -> None:
    """"round 2 of 6 done in 44 s; about 2 min 48 s left (4 rounds)": the mean of the rounds this
    process trained, times the rounds left (controls not counted)."""
    left = pruning_rounds - index
    eta = left * sum(spent_s) / len(spent_s)
    log.info("round %d of %d done in %s%s", index + 1, pruning_rounds + 1, format_duration(spent_s[-1]),
             f"; about {format_duration(eta)} left ({left} round{'s' * (left != 1)})" if left else "")


def _run_round(index: int, setup: LotterySetup, ctx: LotteryContext) -> None:
    round_dir = ctx.run.round_dir(index)
    round_dir.mkdir(parents=True, exist_ok=True)
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
                     optimizer_wrapper=modifier_stepper(setup, round_dir),
                     lr_from_modifiers=setup.lr_from_modifiers)
    holder = MaskHolder(model, mask) if mask is not None else None
    if holder is not None:
        plan.after_step.append(holder.after_step)
    log.info("round %d: training iterations %d-%d", index, start, total)
    metrics = ctx.metrics.with_fields(round=index) if ctx.dist.is_main else NullMetrics()
    outcome = train_round(model, round_dir, ctx.schedule, plan, ctx.loaders, ctx.device, ctx.seed,
                          metrics, ctx.progress, ctx.dist)
    if holder is not None:
        extra["pruned_nonzero_after_training"] = holder.check(model)
        holder.remove()
    if mask is None:  # dense training keeps every weight; gradual: the zeros training left
        mask = setup.method.round0_mask(model, setup.prunable)
    if ctx.dist.enabled:  # the DDP replicas must have trained to the same weights
        digests = rank_replica_digests(ctx.dist, model)
        if len(set(digests)) != 1:
            raise RuntimeError(f"round {index}: the ranks' trained weights differ ({digests})")
        extra["rank_weight_digests"] = digests
    scores = ctx.evaluate(model, round_dir)  # every rank predicts its share; rank 0 scores
    if ctx.dist.is_main:
        _finish_round(index, setup, ctx, model, mask, outcome, {**scores, **extra})


def modifier_stepper(setup: LotterySetup, out_dir: Path) -> Optional[Callable]:
    """The recipe's SparseML modifiers for one training run (None without modifiers)."""
    return setup.modifiers(out_dir / "sparse_logs") if setup.modifiers is not None else None


def _prune_and_rewind(index: int, setup: LotterySetup, ctx: LotteryContext,
                      model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    previous = ctx.run.round_dir(index - 1)
    model.load_state_dict(load_checkpoint(previous / "checkpoint.pt")["model"])
    old_mask = load_mask(previous / "mask.pt", model)
    log_dir = ctx.run.round_dir(index) / ("sparse_logs" if ctx.dist.is_main else
                                          f"sparse_logs_rank{ctx.dist.rank}")
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
    rewind_state = load_checkpoint(ctx.run.round_dir(0) / "rewind.pt")["model"]
    rewind(model, rewind_state, mask)
    return mask, {"mask_iou_with_previous": mask_iou(old_mask, mask), **extra}


def _finish_round(index: int, setup: LotterySetup, ctx: LotteryContext, model: nn.Module,
                  mask: dict[str, torch.Tensor], outcome: dict[str, Any], extra: dict[str, Any]) -> None:
    round_dir = ctx.run.round_dir(index)
    captured = outcome["captured"]
    if "rewind" in captured:
        save_checkpoint(round_dir / "rewind.pt", model=captured["rewind"],
                        iteration=setup.rewind_iteration)
    if setup.early_bird and "snapshot" in captured and index < setup.pruning_rounds:
        final = dict(model.named_parameters())
        snap = captured["snapshot"]
        extra["early_bird_iou"] = early_bird_iou({n: snap[n] for n in mask},
                                                 {n: final[n].detach() for n in mask},
                                                 mask, setup.fraction, _ranking(setup.distribution))
    save_checkpoint(round_dir / "checkpoint.pt", model=model.state_dict(), round=index)
    save_mask(round_dir / "mask.pt", mask)
    sparsity = sparsity_report(model, mask)
    write_json(round_dir / "sparsity.json", sparsity)
    metrics = dict(extra)
    metrics["val_loss"] = outcome["val_loss"]
    write_json(round_dir / "metrics.json", {"round": index, "sparsity": sparsity["network"]["sparsity"],
                                            "prunable_sparsity": sparsity["prunable"]["sparsity"],
                                            "metrics": metrics})
    (round_dir / "last.pt").unlink(missing_ok=True)
    shutil.rmtree(round_dir / "sparse_logs", ignore_errors=True)
    log.info("round %d done: prunable sparsity %.4f, %s", index, sparsity["prunable"]["sparsity"],
             {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})


def _ranking(distribution: str | Distribution) -> Ranking:
    """The magnitude ranking an early-bird check compares (the run's distribution's: runtime
    allocates a global count; block4 ranks blocks)."""
    return for_recipe(distribution).ranking


def _round_record(index: int, round_dir: Path) -> dict[str, Any]:
    return json.loads((round_dir / "metrics.json").read_text())
