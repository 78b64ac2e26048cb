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

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.engine import train_one_epoch, validation_loss
from compress.run_folder import MetricsLog
from compress.schedule import lr_lambda

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
    optimizer_wrapper: Optional[Callable[[nn.Module, torch.optim.Optimizer, int], Any]] = None


def _make_optimizer(model: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum,
                           weight_decay=schedule.weight_decay)


def _make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, start: int):
    lam = lr_lambda(warmup_iters=schedule.warmup_iterations, warmup_factor=schedule.warmup_factor,
                    steps=sorted(schedule.lr_steps), gamma=schedule.lr_gamma)
    for group in optimizer.param_groups:
        group["initial_lr"] = schedule.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lam(start + i))


def train_round(model: nn.Module, round_dir: Path, schedule: Schedule, plan: RoundPlan,
                loaders: dict[str, Any], device: torch.device, seed: int, metrics: MetricsLog,
                progress: bool = True) -> dict[str, Any]:
    """Train `model` in place for this round; return {'val_loss': ..., 'snapshot': state|None}."""
    last_path = round_dir / "last.pt"
    optimizer = _make_optimizer(model, schedule)
    iteration = plan.start_iteration
    captured: dict[str, Any] = {}
    if last_path.is_file():
        state = load_checkpoint(last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        iteration = int(state["iteration"])
        captured = dict(state.get("captured") or {})
        metrics.truncate(int(state["metrics_offset"]))
        log.info("resuming %s at iteration %d", round_dir.name, iteration)
    wrapped = plan.optimizer_wrapper(model, optimizer, iteration) if plan.optimizer_wrapper else optimizer

    def capture(it: int) -> None:
        for name, at in (("rewind", plan.rewind_iteration), ("snapshot", plan.snapshot_iteration)):
            if at is not None and it == at and name not in captured:
                captured[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    capture(iteration)  # a rewind point at the start iteration (e.g. '0it')
    val: dict[str, float] = {}
    while iteration < schedule.total_iterations:
        epoch = iteration // schedule.iterations_per_epoch
        epoch_end = min((epoch + 1) * schedule.iterations_per_epoch, schedule.total_iterations)
        torch.manual_seed(seed + 7919 * epoch)  # RPN/RoI sampling: the same per epoch on resume
        loader = loaders["train_factory"](seed + epoch)
        scheduler = _make_scheduler(optimizer, schedule, iteration)
        train_one_epoch(model, wrapped, loader, device, scheduler=scheduler,
                        start_iteration=iteration, max_iterations=epoch_end,
                        amp=schedule.amp, grad_clip=schedule.grad_clip,
                        after_step=[*plan.after_step, capture], log=metrics.with_fields(epoch=epoch),
                        log_every=schedule.log_every, progress=progress)
        iteration = epoch_end
        val = validation_loss(model, loaders["val_loss"], device)
        metrics({"epoch": epoch + 1, "iteration": iteration, "val_loss": val["loss"],
                 "lr": optimizer.param_groups[0]["lr"]})
        save_checkpoint(last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        iteration=iteration, captured=captured, metrics_offset=metrics.offset())
    if not val:  # resumed after the last epoch had finished
        val = validation_loss(model, loaders["val_loss"], device)
    return {"val_loss": val.get("loss"), "captured": captured}
