"""How each lottery method starts, prunes and ends: the pieces the runner is given, and ticket.pt."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from compress.core.checkpoint import load_checkpoint, save_checkpoint, state_dict_from_file
from compress.core.errors import ModelFileError
from compress.lottery.runner import LotterySetup
from compress.lottery.masks import load_mask
from compress.recipe.load import recipe_hash
from compress.recipe.schema import Recipe
from compress.run.folder import RunFolder
from compress.lottery.transfer import mask_transfer
from compress.lottery.transfer import transfer_ticket
from compress.lottery.transfer import load_source
from compress.lottery.sparseml_adapter import sparseml_prune
from compress.recipe.safe_yaml import modifiers_to_sparseml_yaml
from compress.lottery.sparseml_adapter import manager_from_yaml, sparseml_loggers

log = logging.getLogger(__name__)
Mask = dict[str, torch.Tensor]
PRUNABLE_PLACEHOLDER = "__PRUNABLE__"  # in a modifier's params: the toolkit's prunable set


def initial_mask_fn(recipe: Recipe, setup: LotterySetup) -> Callable[[nn.Module], Optional[Mask]]:
    """Round 0's mask: None (dense training) or the transferred mask, with the source values loaded."""
    lot = recipe.lottery

    def initial(model: nn.Module) -> Optional[Mask]:
        if lot.method == "mask_transfer":
            source = source_weights(lot.source, model)
            return mask_transfer(model, source, list(setup.prunable), lot.target_sparsity,
                                 lot.distribution)
        if lot.method == "transfer_ticket":
            state, mask = load_ticket_parts(Path(lot.source))
            new_mask, matched = transfer_ticket(model, state, mask)
            log.info("transfer ticket: %d tensors matched", len(matched))
            return new_mask
        return None
    return initial


RANDOM_INIT = "random-init:"


def source_weights(source: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Mask Transfer's source: a local weights file, or `random-init:<seed>` (the model's own
    seeded initialisation, a stand-in for pretrained weights when nothing can be downloaded)."""
    if source.startswith(RANDOM_INIT):
        seed = source[len(RANDOM_INIT):]
        if not seed.isdigit():
            raise ModelFileError(f"'{source}': write random-init:<integer seed>", file="lottery.source")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        generator = torch.Generator().manual_seed(int(seed))
        for name, value in state.items():
            if value.dim() > 1 and value.is_floating_point():
                state[name] = torch.randn(value.shape, generator=generator) * value.std()
        return state
    return state_dict_from_file(source)


def load_ticket_parts(path: Path) -> tuple[dict[str, torch.Tensor], Mask]:
    """(state dict, mask) of a ticket.pt, a run folder, or a round checkpoint with mask.pt beside it."""

    if path.is_dir():
        path = path / "ticket.pt"
    state, mask = load_source(path)
    if mask is not None:
        return state, mask
    if (path.parent / "mask.pt").is_file():
        return state, load_mask(path.parent / "mask.pt")
    raise ModelFileError("not a ticket: expected a dict with 'model' and 'mask' (ticket.pt) or a "
                         "checkpoint with mask.pt beside it", file=str(path))


def prune_fn() -> Callable[..., Mask]:
    return sparseml_prune


def optimizer_wrapper_fn(recipe: Recipe, run: RunFolder, iters_per_epoch: int,
                         prunable: tuple[str, ...] = ()) -> Optional[Callable]:
    """For `gradual`: SparseML's step wrapper running the recipe's modifiers.

    The wrapper starts at the round's current iteration (as an epoch fraction), so a resumed
    round continues the pruning schedule where the checkpoint left it instead of restarting it.
    """
    if recipe.lottery.method != "gradual":
        return None

    modifiers = [{k: (list(prunable) if v == PRUNABLE_PLACEHOLDER else v) for k, v in m.items()}
                 for m in recipe.modifiers]
    text = modifiers_to_sparseml_yaml(modifiers)

    def wrap(model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> Any:
        manager = manager_from_yaml(text)
        return manager.modify(model, optimizer, steps_per_epoch=iters_per_epoch,
                              epoch=iteration / iters_per_epoch,
                              loggers=sparseml_loggers(run.round_dir(0) / "sparse_logs"))
    return wrap


def write_ticket(run: RunFolder, recipe: Recipe, records: list[dict[str, Any]]) -> Path:
    """ticket.pt: the last round's weights and mask, stamped with the recipe hash."""
    last = records[-1]["round"]
    round_dir = run.round_dir(last)
    state = load_checkpoint(round_dir / "checkpoint.pt")["model"]
    mask = load_mask(round_dir / "mask.pt")
    save_checkpoint(run.ticket, model=state, mask=mask, round=last, recipe_hash=recipe_hash(recipe),
                    arch=recipe.model.arch, backbone=recipe.model.backbone)
    run.update_summary(ticket={"round": last, "sparsity": records[-1]["sparsity"],
                               "prunable_sparsity": records[-1]["prunable_sparsity"]})
    return run.ticket
