"""The lottery methods, one registry (open_lth's levels, timm's registered models).

Each method says what it needs from the recipe's `lottery:` section, how many pruning rounds follow
round 0, how much of the remaining weights each of them removes, how round 0 starts (dense, or under
a transferred mask) and where round 0's mask comes from. The runner asks the method and nothing
else; the recipe schema takes its names and needs from here. Adding a method is one entry below.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from torch import nn

from compress.lottery.distributions import Allocate, Distribution, for_recipe
from compress.lottery.masks import MASK_TYPES, Mask, dense_mask, mask_from_model
from compress.lottery.transfer import load_ticket_parts, mask_transfer, source_weights, transfer_ticket

log = logging.getLogger(__name__)
Lottery = Any  # the recipe's `lottery:` section (compress.recipe.schema.LotteryCfg)


def _no_rounds(lot: Lottery) -> int:
    return 0


def _geometric(lot: Lottery) -> float:
    """Per round, so that `rounds` rounds reach target_sparsity (else prune_fraction as given)."""
    if lot.target_sparsity is not None:
        return 1.0 - (1.0 - lot.target_sparsity) ** (1.0 / lot.rounds)
    return float(lot.prune_fraction)


def _dense_start(model: nn.Module, lot: Lottery, prunable: tuple[str, ...]) -> Optional[Mask]:
    return None


def _mask_transfer_start(model: nn.Module, lot: Lottery, prunable: tuple[str, ...]) -> Mask:
    """Top-k of the source weights (pretrained or `random-init:<seed>`), held from iteration 0."""
    return mask_transfer(model, source_weights(lot.source, model), list(prunable),
                         lot.target_sparsity, lot.distribution)


def _transfer_ticket_start(model: nn.Module, lot: Lottery, prunable: tuple[str, ...]) -> Mask:
    """Another run's ticket: its mask and surviving values copied in, zeros held."""
    state, mask = load_ticket_parts(Path(lot.source))
    new_mask, matched = transfer_ticket(model, state, mask)
    log.info("transfer ticket: %d tensors matched", len(matched))
    return new_mask


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    needs: dict[str, str] = field(default_factory=dict)  # lottery key -> what to write there
    needs_modifiers: bool = False  # a SparseML `modifiers:` recipe drives round 0's training
    uses_fraction: bool = True  # prune_fraction or target_sparsity must be set
    pruning_rounds: Callable[[Lottery], int] = _no_rounds
    fraction: Callable[[Lottery], float] = _geometric
    start: Callable[[nn.Module, Lottery, tuple[str, ...]], Optional[Mask]] = _dense_start
    mask_from_zeros: bool = False  # round 0 ends with the zeros its training left as the mask
    mask_types: tuple[str, ...] = ("unstructured",)  # the lottery.mask_types its rounds prune

    def initial_mask(self, model: nn.Module, lot: Lottery, prunable: tuple[str, ...]) -> Optional[Mask]:
        """Round 0's mask, with any source values loaded into `model` (None: train dense)."""
        return self.start(model, lot, prunable)

    def round0_mask(self, model: nn.Module, prunable: tuple[str, ...]) -> Mask:
        """The mask of a round 0 that trained without one."""
        return mask_from_model(model, list(prunable)) if self.mask_from_zeros \
            else dense_mask(model, list(prunable))

    @staticmethod
    def prune(model: nn.Module, mask: Mask, fraction: float, distribution: str | Distribution,
              log_dir: Path, allocate: Optional[Allocate] = None) -> Mask:
        """Round k >= 1: prune `fraction` of the kept weights as the run's distribution does
        (compress.lottery.distributions; a name: that entry, single weights)."""
        return for_recipe(distribution).prune(model, mask, fraction, log_dir, allocate)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("imp", "iterative magnitude pruning with rewinding, `rounds` rounds",
           pruning_rounds=lambda lot: lot.rounds, mask_types=MASK_TYPES),
    Method("oneshot", "one pruning round straight to target_sparsity (or prune_fraction)",
           pruning_rounds=lambda lot: 1, mask_types=MASK_TYPES,
           fraction=lambda lot: lot.target_sparsity if lot.target_sparsity is not None
           else lot.prune_fraction),
    Method("gradual", "SparseML gradual magnitude pruning during one training run (`modifiers:`)",
           needs_modifiers=True, mask_from_zeros=True),
    Method("mask_transfer", "top-k mask of source weights held through training",
           needs={"source": "a weights or ticket file", "target_sparsity": "in (0, 1)"},
           start=_mask_transfer_start),
    Method("transfer_ticket", "another run's ticket (mask + values) fine-tuned with zeros held",
           needs={"source": "a weights or ticket file"}, start=_transfer_ticket_start),
    Method("dense", "train dense only (the baseline)", uses_fraction=False, fraction=lambda lot: 0.0),
)}
METHOD_NAMES = tuple(METHODS)
