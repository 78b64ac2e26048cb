"""Rebuild a run's models from its folder: the recipe it ran, the ticket, a round checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.core.checkpoint import check_state_dict_fits, load_checkpoint
from compress.core.errors import ModelFileError, UserError
from compress.lottery.masks import load_mask
from compress.recipe.load import load_resolved
from compress.recipe.schema import Recipe
from compress.core.folders import RoundFolder, RunFolder
from compress.models.build import build_model


@dataclass
class LoadedModel:
    recipe: Recipe
    model: nn.Module
    mask: dict[str, torch.Tensor]
    run: RunFolder


def run_of(path: Path) -> RunFolder:
    """The run folder holding `path` (a run folder, its ticket.pt or a round checkpoint)."""
    for candidate in [path, *path.parents]:
        run = RunFolder(candidate)
        if run.recipe.is_file() and run.rounds.is_dir():
            return run
    raise UserError("not inside a run folder (expected recipe.yaml and rounds/ beside or above it)",
                    file=str(path))


def load_model(path: Path) -> LoadedModel:
    """The ticket of a run folder, or the checkpoint (with its mask.pt) at `path`."""
    run = run_of(path)
    recipe = load_resolved(run.recipe)
    ckpt_path = run.ticket if path.is_dir() else path
    payload = load_checkpoint(ckpt_path)
    if "model" not in payload:
        raise ModelFileError("not a checkpoint: no 'model' entry", file=str(ckpt_path))
    mask = payload.get("mask")
    if mask is None:
        mask = load_mask(RoundFolder(ckpt_path.parent).mask)
    summary = run.read_summary()
    model = build_for_run(recipe, summary.get("num_classes"))
    check_state_dict_fits(payload["model"], model.state_dict(), ckpt_path,
                          f"the recipe's {recipe.model.arch} / {recipe.model.backbone}")
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(f"checkpoint does not fit the recipe's {recipe.model.arch} / "
                             f"{recipe.model.backbone}: {first}", file=str(ckpt_path)) from err
    return LoadedModel(recipe, model.eval(), mask, run)


def build_for_run(recipe: Recipe, num_classes: int | None) -> nn.Module:
    if num_classes is None:
        raise UserError("summary.json has no num_classes; rerun with --resume to refresh it")
    m = recipe.model
    return build_model(m.arch, m.backbone, num_classes, trainable_layers=m.trainable_layers,
                       norm=m.norm, min_size=m.min_size, max_size=m.max_size, heads=recipe.model.heads)
