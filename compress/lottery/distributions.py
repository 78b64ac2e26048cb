"""How a pruning round spreads its zeros across the layers, one registry (as the methods).

Each distribution says how a round prunes (through SparseML, checked against the pure pruner of
`compress.lottery.masks`), what it needs (the runtime one: a latency profile, hence an allocator),
which methods take it and which `lottery.mask_type`s it can honour. The recipe schema takes its
names, methods and mask types from here; the pipeline builds the run's `Distribution` (the entry
with the recipe's mask type) and the runner hands it to `Method.prune`. Adding one is one entry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from torch import nn

from compress.lottery import sparseml_adapter
from compress.lottery.masks import MASK_TYPES, Mask, Ranking

Allocate = Callable[[nn.Module, Mask, float], dict[str, int]]  # (model, mask, fraction) -> zeros


def _by_magnitude(dist: "Distribution", model: nn.Module, mask: Mask, fraction: float,
                  log_dir: Path, allocate: Optional[Allocate]) -> Mask:
    return sparseml_adapter.sparseml_prune(model, mask, fraction, dist.ranking, log_dir)


def _allocated(dist: "Distribution", model: nn.Module, mask: Mask, fraction: float,
               log_dir: Path, allocate: Optional[Allocate]) -> Mask:
    """`allocate(model, mask, fraction)` gives each tensor's zeros (the same total as global) and
    each tensor is pruned to its count."""
    if allocate is None:
        raise ValueError(f"distribution '{dist.name}' needs an allocator (a latency profile)")
    return sparseml_adapter.sparseml_prune_layers(model, mask, allocate(model, mask, fraction),
                                                  log_dir)


@dataclass(frozen=True)
class Distribution:
    name: str
    description: str
    ranks: str  # the pure pruner's ranking (masks.RANKINGS): the round's count, early-bird checks
    prune_with: Callable[..., Mask] = _by_magnitude
    needs_profile: bool = False  # a latency profile (lottery.runtime) and the allocator over it
    methods: Optional[tuple[str, ...]] = None  # the methods that take it (None: every one)
    mask_types: tuple[str, ...] = MASK_TYPES  # the lottery.mask_types it can honour
    mask_type: str = "unstructured"  # the run's lottery.mask_type (`for_recipe`)

    @property
    def ranking(self) -> Ranking:
        """What `masks.magnitude_prune` / `early_bird_iou` rank for this run."""
        return Ranking(self.ranks, self.mask_type)

    def prune(self, model: nn.Module, mask: Mask, fraction: float, log_dir: Path,
              allocate: Optional[Allocate] = None) -> Mask:
        """Round k >= 1: prune `fraction` of the kept weights by magnitude through SparseML."""
        return self.prune_with(self, model, mask, fraction, log_dir, allocate)


DISTRIBUTIONS: dict[str, Distribution] = {d.name: d for d in (
    Distribution("global", "one magnitude threshold over every prunable tensor", "global"),
    Distribution("layerwise", "each prunable tensor loses the same fraction", "layerwise"),
    Distribution("runtime", "zeros placed by predicted DeepSparse latency (the latency profile)",
                 "global", prune_with=_allocated, needs_profile=True, methods=("imp", "oneshot"),
                 # the profile and the allocator count single weights, not blocks
                 mask_types=("unstructured",)),
)}
DISTRIBUTION_NAMES = tuple(DISTRIBUTIONS)


def for_recipe(distribution: "str | Distribution", mask_type: str = "unstructured") -> Distribution:
    """The run's distribution: the registry entry named `distribution` with the recipe's mask
    type (a Distribution is returned as it is)."""
    if isinstance(distribution, Distribution):
        return distribution
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution '{distribution}' not in {DISTRIBUTION_NAMES}")
    entry = DISTRIBUTIONS[distribution]
    if mask_type not in entry.mask_types:
        raise ValueError(f"distribution '{distribution}' cannot prune mask_type '{mask_type}'")
    return replace(entry, mask_type=mask_type)
