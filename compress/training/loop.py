"""One training / validation / prediction loop for Faster, Mask and Keypoint R-CNN.

In the style of torchvision's detection reference scripts. Iterations are counted globally:
`iteration` is the number of optimizer steps taken so far (step k is the k-th step, 1-based).
Batches are `(images, targets)`: sequences of CxHxW tensors and target dicts (the usual
`collate_fn=lambda b: tuple(zip(*b))`).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from compress.core.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)

Batch = tuple[Sequence[torch.Tensor], Sequence[dict[str, Any]]]


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite (the message names the iteration and loss parts).

    A UserError: the CLI reports it in one line with exit code 2 (the usual causes are the recipe's
    learning rate, missing gradient clipping, or FrozenBatchNorm on a backbone trained from scratch).
    """

    def __init__(self, iteration: int, parts: dict[str, float]):
        self.iteration = iteration
        self.parts = parts
        shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        super().__init__(f"non-finite loss at iteration {iteration}: {shown}; the round stopped "
                         "(finished rounds are intact): lower train.lr, set train.grad_clip, or use "
                         "model.norm: batch when training from scratch")


def _to_device(batch: Batch, device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in target.items()} for target in targets]
    return images, targets


def _progress(loader: Iterable, enabled: bool, desc: str, total: int | None = None) -> Any:
    disable = not enabled or not sys.stderr.isatty()
    return tqdm(loader, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True)


_AMP_NOTED: set[str] = set()  # device types already told that AMP is off there


def use_amp(amp: bool, device: torch.device) -> bool:
    """AMP runs on CUDA only; elsewhere a request for it trains in float32 (with a warning,
    once per process and device type: not every round and epoch)."""
    if amp and device.type != "cuda":
        if device.type not in _AMP_NOTED:
            _AMP_NOTED.add(device.type)
            log.warning("AMP requested on %s: AMP runs only on CUDA, training in float32", device)
        return False
    return amp


class _Meter:
    """Running sums of loss parts: over the epoch and over the current logging window."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.window: dict[str, float] = {}
        self.count = 0
        self.window_count = 0
        self.window_start = time.perf_counter()

    def add(self, parts: dict[str, float]) -> None:
        for key, value in parts.items():
            self.total[key] = self.total.get(key, 0.0) + value
            self.window[key] = self.window.get(key, 0.0) + value
        self.count += 1
        self.window_count += 1

    def pop_window(self) -> dict[str, float]:
        record = {k: v / max(self.window_count, 1) for k, v in self.window.items()}
        elapsed = time.perf_counter() - self.window_start
        record["seconds_per_iter"] = elapsed / max(self.window_count, 1)
        self.window, self.window_count, self.window_start = {}, 0, time.perf_counter()
        return record

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.total.items()}


def _loss_parts(loss_dict: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, float]:
    parts = {"loss": float(total.detach())}
    parts.update({k: float(v.detach()) for k, v in loss_dict.items()})
    return parts


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
          scaler: torch.amp.GradScaler | None, grad_clip: float | None, stepper: Any = None) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        (stepper or scaler).step(optimizer)  # SparseML's wrapper around the scaler, if any
        scaler.update()
        return
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    (stepper or optimizer).step()


def train_one_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable[Batch], device: torch.device | str,
    *, scheduler: Any = None, start_iteration: int = 0, max_iterations: int | None = None, amp: bool = False,
    grad_clip: float | None = None, after_step: Sequence[Callable[[int], None]] = (),
    on_record: Callable[[dict[str, Any]], None] | None = None, log_every: int = 20, progress: bool = True,
    scaler: torch.amp.GradScaler | None = None, stepper: Any = None,
) -> dict[str, float]:
    """Train over `loader` once (or until the global iteration reaches `max_iterations`).

    After each optimizer step (and scheduler step, once per iteration) every `after_step`
    callback is called as cb(iteration). `on_record(record)` gets, every `log_every` iterations and at
    the end, {iteration, lr, loss, loss_<part>..., seconds_per_iter} averaged over the window.
    Returns the epoch means of the loss parts plus `iterations` (run here) and `iteration` (global).
    Raises NonFiniteLossError before stepping on a NaN/inf loss. Pass `scaler` to keep a
    GradScaler's state across epochs (else one is made per call when AMP is on). `stepper`
    (SparseML's modifier wrapper) takes the place of `optimizer.step()`, or with AMP of
    `scaler.step(optimizer)` (it then wraps the scaler).
    """
    device = torch.device(device)
    amp = use_amp(amp, device)
    if amp and scaler is None:
        scaler = torch.amp.GradScaler("cuda")
    model.train()
    meter, iteration = _Meter(), start_iteration
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    bar = _progress(loader, progress, f"train it {start_iteration}", total)
    for batch in bar:
        if max_iterations is not None and iteration >= max_iterations:
            break
        images, targets = _to_device(batch, device)
        with torch.autocast("cuda", enabled=amp):
            loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        parts = _loss_parts(loss_dict, loss)
        if not all(math.isfinite(v) for v in parts.values()):
            raise NonFiniteLossError(iteration + 1, parts)
        _step(model, optimizer, loss, scaler if amp else None, grad_clip, stepper)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used (SparseML sets it in step)
        if scheduler is not None:
            scheduler.step()
        iteration += 1
        for callback in after_step:
            callback(iteration)
        meter.add(parts)
        bar.set_postfix(loss=f"{parts['loss']:.3f}", refresh=False)
        if on_record is not None and (iteration % log_every == 0):
            on_record({"iteration": iteration, "lr": lr, **meter.pop_window()})
    if on_record is not None and meter.window_count:
        on_record({"iteration": iteration, "lr": lr, **meter.pop_window()})
    result: dict[str, float] = meter.means()
    result.update(iterations=iteration - start_iteration, iteration=iteration)
    return result


def _set_norm_eval(model: nn.Module) -> dict[nn.Module, bool]:
    modes = {module: module.training for module in model.modules()}
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return modes


@torch.no_grad()
def validation_loss(model: nn.Module, loader: Iterable[Batch], device: torch.device | str, *,
                    seed: int = 0, progress: bool = False) -> dict[str, float]:
    """Mean loss parts on `loader` without training.

    The R-CNN heads only return losses in train mode, so the model runs in train mode under
    torch.no_grad with every BatchNorm switched to eval mode: BN uses (and does not update) its
    running statistics. RPN / RoI sampling is random in train mode, so it runs under a forked RNG
    seeded with `seed`: the result is repeatable and the caller's RNG stream is left untouched.
    Each module's train/eval mode is restored afterwards. Quantization observers (a QAT model's
    FakeQuantize) are paused too: validation images never move the quantization scales.
    """
    device = torch.device(device)
    modes = _set_norm_eval(model)
    observers = [(m, m.observer_enabled.clone()) for m in model.modules()
                 if isinstance(getattr(m, "observer_enabled", None), torch.Tensor)]
    for module, _ in observers:
        module.observer_enabled.zero_()
    meter = _Meter()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for batch in _progress(loader, progress, "val loss"):
                images, targets = _to_device(batch, device)
                loss_dict = model(images, targets)
                meter.add(_loss_parts(loss_dict, sum(loss_dict.values())))
    finally:
        for module, training in modes.items():
            module.training = training
        for module, enabled in observers:
            module.observer_enabled.copy_(enabled)
    if meter.count == 0:
        raise ValueError("validation_loss got an empty loader: no batches to evaluate")
    return meter.means()


def _image_id(target: dict[str, Any]) -> int:
    value = target["image_id"]
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[Batch], device: torch.device | str,
            progress: bool = True) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """(image_id, outputs on cpu) for every image, in eval mode (mode restored afterwards)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    results: list[tuple[int, dict[str, torch.Tensor]]] = []
    try:
        for images, targets in _progress(loader, progress, "predict"):
            outputs = model([image.to(device) for image in images])
            for target, output in zip(targets, outputs):
                results.append((_image_id(target), {k: v.to("cpu") for k, v in output.items()}))
    finally:
        model.train(was_training)
    return results
