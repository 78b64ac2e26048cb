"""Did a `lottery.method: gradual` run reach what its pruning modifiers aim at?

Each pruning modifier (`!GMPruningModifier`, `!GlobalMagnitudePruningModifier`, ...) names a final
sparsity over its params; the zeros round 0's training left (rounds/round_0/sparsity.json) are
measured over the same params. A modifier whose schedule ends after the training does leaves the
run far short of it (the shipped GMP recipe on a short training: 0.05 instead of 0.80); that is
the `shortfall` check of compress.run.checks, one warning line per modifier.
"""
from __future__ import annotations

import json
from typing import Any

from compress.core.folders import RoundFolder
from compress.core.param_names import selected
from compress.lottery.sparseml_adapter import pruning_targets
from compress.run.checks import SHORTFALL_TOLERANCE
from compress.run.modifiers import modifier_source

def shortfalls(targets: list[dict[str, Any]], layers: dict[str, Any], trained_epochs: float,
               tolerance: float = SHORTFALL_TOLERANCE) -> list[str]:
    """One message per modifier target the measured layers fall short of by more than
    `tolerance` (absolute sparsity)."""
    out = []
    for target in targets:
        names = selected(target["params"], list(layers))  # SparseML's rule
        numel = sum(layers[n]["numel"] for n in names)
        if not numel:
            continue
        reached = sum(layers[n]["zeros"] for n in names) / numel
        if reached >= target["target"] - tolerance:
            continue
        end = target["end_epoch"]
        why = (f": the modifiers' schedule ends at epoch {end:g} but training ran "
               f"{trained_epochs:g} epochs (lengthen train.iterations / train.epochs or end the "
               f"modifier sooner)" if end > trained_epochs + 1e-9 else
               f" although training ran past the schedule's end (epoch {end:g})")
        out.append(f"gradual pruning reached sparsity {reached:.2f} of target "
                   f"{target['target']:.2f} over {len(names)} tensors{why}")
    return out


def gradual_shortfalls(recipe: Any, round0: RoundFolder, prunable: tuple[str, ...],
                       trained_epochs: float) -> list[str]:
    """The shortfall messages of a gradual run's round 0 (none without pruning modifiers)."""
    source = modifier_source(recipe, prunable)
    path = round0.sparsity
    if source is None or not path.is_file():
        return []
    layers = json.loads(path.read_text())["layers"]
    return shortfalls(pruning_targets(source, recipe.modifier_variables), layers, trained_epochs)
