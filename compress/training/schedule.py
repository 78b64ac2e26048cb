"""Iteration-based learning-rate schedule and duration parsing.

The schedule is torchvision references' detection schedule counted in iterations: linear warmup
from `warmup_factor` to 1 over `warmup_iters`, then multiply by `gamma` at each milestone in
`steps`. `lr_lambda` returns the multiplier for `torch.optim.lr_scheduler.LambdaLR`, which calls it
with the number of scheduler steps taken so far (step once per optimizer step).
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence

import torch

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(it|ep)\s*$")


def lr_lambda(
    *, warmup_iters: int = 0, warmup_factor: float = 0.001, steps: Sequence[int] = (), gamma: float = 0.1
) -> Callable[[int], float]:
    """Multiplier at iteration `it`: warmup_factor -> 1 linearly over warmup_iters, then gamma**k
    where k is the number of milestones in `steps` that are <= it."""
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
    if not 0.0 < warmup_factor <= 1.0:
        raise ValueError(f"warmup_factor must be in (0, 1], got {warmup_factor}")
    if list(steps) != sorted(steps) or any(s < 0 for s in steps):
        raise ValueError(f"steps must be non-negative and increasing, got {list(steps)}")
    milestones = [int(s) for s in steps]

    def factor(it: int) -> float:
        decay = gamma ** bisect.bisect_right(milestones, it)
        if it < warmup_iters:
            alpha = it / warmup_iters
            return decay * (warmup_factor * (1.0 - alpha) + alpha)
        return decay

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_iters: int = 0, warmup_factor: float = 0.001,
    steps: Sequence[int] = (), gamma: float = 0.1, last_iteration: int = -1,
    base_lr: float | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration `LambdaLR` over `lr_lambda`; pass last_iteration (the iteration before the
    first step) when resuming, and base_lr to fix the rate the multipliers apply to."""
    for group in optimizer.param_groups:
        if base_lr is not None:
            group["initial_lr"] = base_lr
        elif last_iteration >= 0:
            group.setdefault("initial_lr", group["lr"])
    fn = lr_lambda(warmup_iters=warmup_iters, warmup_factor=warmup_factor, steps=steps, gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn, last_epoch=last_iteration)


def parse_duration(text: str | int, iters_per_epoch: int) -> int:
    """Iterations in "500it", "1ep" or "0.5ep" (epochs rounded to the nearest iteration).

    A bare int is taken as iterations. Raises ValueError with the allowed forms for bad text.
    """
    if isinstance(text, bool):
        raise ValueError(f"bad duration {text!r}: expected e.g. '500it', '1ep' or '0.5ep'")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"bad duration {text!r}: must be >= 0")
        return text
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"bad duration {text!r}: expected <number>it or <number>ep, e.g. '500it', '1ep', '0.5ep'")
    value, unit = match.groups()
    if unit == "it":
        if not float(value).is_integer():
            raise ValueError(f"bad duration {text!r}: iterations must be a whole number")
        return int(float(value))
    if iters_per_epoch <= 0:
        raise ValueError(f"cannot convert {text!r} to iterations: iters_per_epoch is {iters_per_epoch}")
    return int(round(float(value) * iters_per_epoch))
