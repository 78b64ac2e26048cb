"""What every trained folder of the lottery shares: the rounds, their controls, the seed replicates.

`LotterySetup` (what the recipe asks for) and `LotteryContext` (what the pipeline built) go to the
runner (compress.lottery.runner) and the controls (compress.lottery.controls) alike. Each trained
folder (a compress.core.folders.RoundFolder) takes the same three steps: `train_unless_done` (a
finished folder is skipped; a killed one resumes from its last.pt), `train_held` (the round's
schedule with the mask held) and `finish` (checkpoint.pt, mask.pt, metrics.json last).
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from compress.core.atomic import write_json
from compress.core.checkpoint import load_checkpoint, save_checkpoint
from compress.core.distributed import SINGLE, Dist
from compress.core.errors import ModelFileError
from compress.core.folders import MetricsLog, NullMetrics, RoundFolder, RunFolder
from compress.lottery.distributions import Distribution
from compress.lottery.masks import Mask, MaskHolder, load_mask, save_mask, sparsity_report
from compress.lottery.methods import Method
from compress.lottery.runtime_aware import RuntimeAllocator
from compress.training.round import RoundPlan, Schedule, train_round

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LotterySetup:
    method: Method
    lottery: Any  # the recipe's lottery section, for the method's round-0 start
    pruning_rounds: int
    fraction: float  # of the remaining weights, per pruning round
    distribution: Distribution  # compress.lottery.distributions: how a round prunes
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
    evaluate: Callable[[nn.Module, RoundFolder], dict[str, Any]]  # scores, files under its eval/
    progress: bool = True
    dist: Dist = SINGLE  # under torchrun: every rank trains, rank 0 writes


def modifier_stepper(setup: LotterySetup, folder: RoundFolder) -> Optional[Callable]:
    """The recipe's SparseML modifiers for one training run (None without modifiers)."""
    return setup.modifiers(folder.sparse_logs) if setup.modifiers is not None else None


def finished_intact(folder: RoundFolder) -> bool:
    """Whether a finished round or control (metrics.json written) still has a checkpoint and mask
    that pass their checks; if not, its metrics.json is removed so it trains again (deterministic)."""
    if not folder.metrics.is_file():
        return False
    try:
        load_checkpoint(folder.checkpoint)
        load_mask(folder.mask)
    except ModelFileError as err:
        log.warning("%s; %s runs again", err, folder.root.name)
        folder.metrics.unlink(missing_ok=True)
        return False
    return True


def train_unless_done(folder: RoundFolder, ctx: LotteryContext, train: Callable[[], None]
                      ) -> dict[str, Any]:
    """Call `train` unless `folder` is finished and intact (rank 0 decides for every rank);
    return its metrics.json."""
    done = ctx.dist.broadcast(finished_intact(folder) if ctx.dist.is_main else None)
    if not done:
        folder.root.mkdir(parents=True, exist_ok=True)
        train()
    ctx.dist.barrier()
    if ctx.dist.is_main:
        folder.last.unlink(missing_ok=True)  # a kill after metrics.json left it
    return json.loads(folder.metrics.read_text())


def train_held(model: nn.Module, mask: Optional[Mask], folder: RoundFolder, plan: RoundPlan,
               ctx: LotteryContext, seed: int, what: str, **fields: Any
               ) -> tuple[dict[str, Any], Optional[int]]:
    """Train `model` in `folder` on the round's schedule from `plan.start_iteration` with `mask`
    held (None: dense), logging with `fields`; return train_round's outcome and the pruned entries
    left nonzero (None when dense)."""
    holder = MaskHolder(model, mask) if mask is not None else None
    if holder is not None:
        plan.after_step.append(holder.after_step)
    log.info("%s: training iterations %d-%d", what, plan.start_iteration,
             ctx.schedule.total_iterations)
    metrics = ctx.metrics.with_fields(**fields) if ctx.dist.is_main else NullMetrics()
    outcome = train_round(model, folder, ctx.schedule, plan, ctx.loaders, ctx.device, seed,
                          metrics, ctx.progress, ctx.dist)
    if holder is None:
        return outcome, None
    nonzero = holder.check(model)
    holder.remove()
    return outcome, nonzero


def finish(folder: RoundFolder, model: nn.Module, mask: Mask, record: dict[str, Any], *, what: str,
           header: dict[str, Any], stamp: dict[str, Any], sparsity_file: bool = False) -> None:
    """Write a trained folder (rank 0): checkpoint.pt (stamped), mask.pt, sparsity.json when
    asked, then metrics.json (`header`, the sparsities, `record` as its metrics); drop last.pt
    and the SparseML logs."""
    save_checkpoint(folder.checkpoint, model=model.state_dict(), **stamp)
    save_mask(folder.mask, mask)
    sparsity = sparsity_report(model, mask)
    if sparsity_file:
        write_json(folder.sparsity, sparsity)
    write_json(folder.metrics, {**header, "sparsity": sparsity["network"]["sparsity"],
                                "prunable_sparsity": sparsity["prunable"]["sparsity"],
                                "metrics": record})
    folder.last.unlink(missing_ok=True)
    shutil.rmtree(folder.sparse_logs, ignore_errors=True)
    log.info("%s done: prunable sparsity %.4f, %s", what, sparsity["prunable"]["sparsity"],
             {k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
