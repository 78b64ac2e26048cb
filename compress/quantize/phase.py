"""The quantization phase's training: the ticket, BatchNorms folded, fake-quantized by SparseML's
`!QuantizationModifier` and trained for `quantize.iterations` with its mask held (`MaskHolder`,
as every lottery round holds it); observers frozen after `quantize.observer_freeze` of them.

It trains with the lottery's own round loop (`train_round`): `quantize/last.pt` after every
epoch, each epoch reseeded, so a killed phase resumes at its last epoch boundary to the same
result. The INT8 ticket is `quantize/model.pt`: the quantized model's state dict, its mask (by
the quantized model's parameter names) and what rebuilds it (`rebuild`).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.core.checkpoint import load_checkpoint, save_checkpoint
from compress.core.errors import ModelFileError
from compress.lottery.masks import MaskHolder
from compress.lottery.sparseml_adapter import sparseml_loggers
from compress.quantize.qat import (freeze, prepare_qat, quantization_manager, quantization_recipe,
                                   quantized_layers)
from compress.recipe.schema import Recipe
from compress.core.folders import MetricsLog, RoundFolder
from compress.run.loaded import load_model, run_of
from compress.training.round import RoundPlan, Schedule, train_round

log = logging.getLogger(__name__)


def _recipe_text(recipe: Recipe, ipe: int) -> str:
    q = recipe.quantize
    return quantization_recipe(round(q.observer_freeze * q.iterations) / ipe
                               if q.observer_freeze < 1 else None)


def qat_model(ticket: nn.Module, mask: dict[str, torch.Tensor], recipe_text: str,
              loggers: Any) -> tuple[nn.Module, Any, dict[str, torch.Tensor]]:
    """(fake-quantized copy of `ticket`, its SparseML manager, the mask by its new names)."""
    model = copy.deepcopy(ticket).cpu()
    manager = quantization_manager(recipe_text)
    layout = prepare_qat(model, manager, loggers=loggers)
    return model, manager, layout.mask(mask)


def _schedule(recipe: Recipe, ipe: int) -> Schedule:
    q, t = recipe.quantize, recipe.train
    return Schedule(total_iterations=q.iterations, iterations_per_epoch=ipe,
                    lr=q.lr if q.lr is not None else t.lr / 100, momentum=t.momentum,
                    weight_decay=t.weight_decay, warmup_iterations=0, warmup_factor=1.0,
                    lr_steps=(), lr_gamma=1.0, grad_clip=t.grad_clip, amp=False,
                    log_every=t.log_every)


def train_qat(ticket: nn.Module, mask: dict[str, torch.Tensor], recipe: Recipe,
              loaders: dict[str, Any], ipe: int, out: Path, progress: bool) -> dict[str, Any]:
    """Train the quantization phase into `out` (resumable); write `out/model.pt`; the record."""
    out.mkdir(parents=True, exist_ok=True)
    loggers = sparseml_loggers(RoundFolder(out).sparse_logs)
    model, manager, qmask = qat_model(ticket, mask, _recipe_text(recipe, ipe), loggers)
    holder = MaskHolder(model, qmask)

    def stepper(module: nn.Module, optimizer: torch.optim.Optimizer, iteration: int,
                scaler: Any = None) -> Any:
        return manager.modify(module, optimizer, steps_per_epoch=ipe, epoch=iteration / ipe,
                              loggers=loggers)

    schedule = _schedule(recipe, ipe)
    plan = RoundPlan(start_iteration=0, after_step=[holder.after_step], optimizer_wrapper=stepper)
    log.info("quantize: QAT for %d iterations (lr %g), observers frozen after %s", schedule.total_iterations,
             schedule.lr, f"{recipe.quantize.observer_freeze:.0%}" if recipe.quantize.observer_freeze < 1
             else "never")
    outcome = train_round(model, RoundFolder(out), schedule, plan, loaders, torch.device("cpu"),
                          recipe.train.seed, MetricsLog(out / "metrics.jsonl"), progress)
    nonzero = holder.check(model)
    holder.remove()
    manager.finalize(model)
    freeze(model)
    layers = quantized_layers(model)
    save_checkpoint(out / "model.pt", model=model.state_dict(), mask=qmask,
                    iterations=schedule.total_iterations)
    return {"iterations": schedule.total_iterations, "lr": schedule.lr,
            "observer_freeze_iteration": round(recipe.quantize.observer_freeze * schedule.total_iterations),
            "quantized_layers": len(layers), "val_loss": outcome["val_loss"],
            "pruned_nonzero_after_training": nonzero}


def rebuild(ticket: nn.Module, mask: dict[str, torch.Tensor],
            out: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The INT8 ticket from `out/model.pt`: (fake-quantized model in eval, observers off, its
    mask). The observers' schedule does not matter here: they are frozen."""
    path = out / "model.pt"
    payload = load_checkpoint(path)
    model, _, qmask = qat_model(ticket, mask, quantization_recipe(None),
                                sparseml_loggers(RoundFolder(out).sparse_logs))
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(f"not this run's INT8 ticket: {first}", file=str(path)) from err
    return freeze(model).eval(), qmask


def load_int8(checkpoint: Path) -> nn.Module:
    """The INT8 ticket at `RUN/quantize/model.pt`, rebuilt (for `compress predict` on torch)."""
    run = run_of(checkpoint.resolve())
    loaded = load_model(run.root)
    return rebuild(loaded.model, loaded.mask, run.quantize)[0]
