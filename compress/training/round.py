"""Train one lottery round: SGD from a start iteration to the end of the schedule, the mask held,
the rewind point and the early-bird snapshot captured, checkpointed every epoch so a killed round
resumes at its last epoch boundary with the same result."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from compress.core.checkpoint import load_checkpoint, save_checkpoint
from compress.core.errors import ModelFileError
from compress.training.loop import train_one_epoch, use_amp, validation_loss
from compress.core.distributed import SINGLE, Dist
from compress.core.folders import MetricsLog, RoundFolder
from compress.training.schedule import build_scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """The training schedule in iterations."""

    total_iterations: int
    iterations_per_epoch: int
    lr: float
    momentum: float
    weight_decay: float
    warmup_iterations: int
    warmup_factor: float
    lr_steps: tuple[int, ...]
    lr_gamma: float
    grad_clip: Optional[float] = None
    amp: bool = False
    log_every: int = 20


@dataclass
class RoundPlan:
    """What one round does besides training: where it starts, what it captures."""

    start_iteration: int = 0
    rewind_iteration: Optional[int] = None  # capture weights here (round 0 of IMP)
    snapshot_iteration: Optional[int] = None  # early-bird snapshot (50% of the round)
    after_step: list[Callable[[int], None]] = field(default_factory=list)
    # SparseML modifiers: wrapper(model, optimizer, iteration, scaler) -> the stepper that runs them
    optimizer_wrapper: Optional[Callable[..., Any]] = None
    lr_from_modifiers: bool = False  # the modifiers set the learning rate: no scheduler of ours


def _make_optimizer(model: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum,
                           weight_decay=schedule.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, start: int) -> Any:
    return build_scheduler(optimizer, warmup_iters=schedule.warmup_iterations,
                           warmup_factor=schedule.warmup_factor, steps=sorted(schedule.lr_steps),
                           gamma=schedule.lr_gamma, last_iteration=start - 1, base_lr=schedule.lr)


def _make_scaler(schedule: Schedule, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """One GradScaler for the whole round (its scale is part of the epoch checkpoint)."""
    return torch.amp.GradScaler("cuda") if use_amp(schedule.amp, device) else None


@dataclass
class _RoundState:
    iteration: int
    captured: dict[str, Any]


def _resume(folder: RoundFolder, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: Optional[torch.amp.GradScaler], metrics: MetricsLog,
            start: int) -> _RoundState:
    """Load the round's last epoch checkpoint, if any, and drop the log lines written after it."""
    last_path = folder.last
    if not last_path.is_file():
        metrics.drop_own_records()  # a round run again (its files failed their checks)
        return _RoundState(start, {})
    try:
        state = load_checkpoint(last_path)
    except ModelFileError as err:  # truncated / corrupt: restart the round from its start
        log.warning("%s; the round restarts from its start", err)
        last_path.replace(folder.last_corrupt)
        metrics.drop_own_records()
        return _RoundState(start, {})
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    metrics.truncate(int(state["metrics_offset"]))
    log.info("resuming %s at iteration %d", folder.root.name, int(state["iteration"]))
    return _RoundState(int(state["iteration"]), dict(state.get("captured") or {}))


def _save_last(last_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: Optional[torch.amp.GradScaler], state: _RoundState,
               metrics: MetricsLog) -> None:
    save_checkpoint(last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else {},
                    iteration=state.iteration, captured=state.captured,
                    metrics_offset=metrics.offset())


def _ddp(model: nn.Module, device: torch.device, dist: Dist) -> nn.Module:
    """The module to train: the model itself, or a DDP wrapper sharing its parameters."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # RoI heads can leave a head unused in a step (no positive proposals): find_unused_parameters
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def train_round(model: nn.Module, folder: RoundFolder, schedule: Schedule, plan: RoundPlan,
                loaders: dict[str, Any], device: torch.device, seed: int, metrics: MetricsLog,
                progress: bool = True, dist: Dist = SINGLE) -> dict[str, Any]:
    """Train `model` in place for this round; return {'val_loss': float, 'captured': {...}}.

    `last.pt` (model, optimizer, GradScaler, iteration, captured states, log offset) is written
    at the start and after every epoch; a rerun continues from it. Each epoch reseeds torch and
    the loader from (seed, epoch), so a resumed round equals an uninterrupted one bit for bit.
    Under torchrun the model trains wrapped in DistributedDataParallel; only rank 0 writes.
    """
    last_path = folder.last
    optimizer = _make_optimizer(model, schedule)
    scaler = _make_scaler(schedule, device)
    state = _resume(folder, model, optimizer, scaler, metrics, plan.start_iteration)
    fresh = not last_path.is_file()
    stepper = plan.optimizer_wrapper(model, optimizer, state.iteration, scaler) \
        if plan.optimizer_wrapper else None

    def capture(it: int) -> None:
        for name, at in (("rewind", plan.rewind_iteration), ("snapshot", plan.snapshot_iteration)):
            if at is not None and it == at and name not in state.captured:
                state.captured[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    capture(state.iteration)  # a rewind point at the start iteration (e.g. '0it')
    if fresh and dist.is_main:  # a kill in the first epoch then resumes here, log truncated
        _save_last(last_path, model, optimizer, scaler, state, metrics)
    trained = _ddp(model, device, dist)
    val: dict[str, float] = {}
    while state.iteration < schedule.total_iterations:
        epoch = state.iteration // schedule.iterations_per_epoch
        epoch_end = min((epoch + 1) * schedule.iterations_per_epoch, schedule.total_iterations)
        torch.manual_seed(seed + 7919 * epoch)  # RPN/RoI sampling, flips: the same on resume
        train_one_epoch(trained, optimizer, loaders["train_factory"](seed + epoch), device,
                        scheduler=None if plan.lr_from_modifiers else
                        _scheduler(optimizer, schedule, state.iteration), stepper=stepper,
                        start_iteration=state.iteration, max_iterations=epoch_end,
                        amp=scaler is not None, grad_clip=schedule.grad_clip, scaler=scaler,
                        after_step=[*plan.after_step, capture], on_record=metrics.with_fields(epoch=epoch),
                        log_every=schedule.log_every, progress=progress)
        state.iteration = epoch_end
        val = validation_loss(model, loaders["val_loss"], device)
        metrics({"epoch": epoch + 1, "iteration": state.iteration, "val_loss": val["loss"],
                 "lr": optimizer.param_groups[0]["lr"]})
        if dist.is_main:
            _save_last(last_path, model, optimizer, scaler, state, metrics)
        dist.barrier()
    if not val:  # resumed after the last epoch had finished
        val = validation_loss(model, loaders["val_loss"], device)
    return {"val_loss": val.get("loss"), "captured": state.captured}
