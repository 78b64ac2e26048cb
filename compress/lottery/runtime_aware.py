"""`lottery.distribution: runtime`: each IMP round's zeros spread across layers for DeepSparse speed.

A round removes the same number of weights as global pruning would (round(fraction * kept), so
the totals follow 1 - (1 - p)^k); `compress.lottery.allocator` decides how many fall in each
layer from the latency profile and the round's trained weights, never fewer than a layer already
holds (masks nest); SparseML then prunes each tensor to its count.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from torch import Tensor, nn

from compress.core.atomic import write_json
from compress.lottery.allocator import runtime_allocation, layer_curves
from compress.lottery.profile import build_profile, default_profile_path, layer_input_shapes, profile_key

log = logging.getLogger(__name__)


class RuntimeAllocator:
    """Callable (model, mask, fraction) -> {name: zeros}; keeps the last allocation's record."""

    def __init__(self, profile: Mapping[str, Any], *, mass_bound: float = 0.5,
                 max_layer_sparsity: float = 0.98, stem_max_sparsity: float = 0.8) -> None:
        self.profile = profile
        self.mass_bound = mass_bound
        self.max_layer_sparsity = max_layer_sparsity
        self.stem_max_sparsity = stem_max_sparsity
        self.last_record: dict[str, Any] = {}

    def __call__(self, model: nn.Module, mask: Mapping[str, Tensor], fraction: float) -> dict[str, int]:
        state = model.state_dict()
        kept = sum(int(m.sum()) for m in mask.values())
        zeros_now = sum(m.numel() for m in mask.values()) - kept
        total = zeros_now + round(fraction * kept)
        curves = layer_curves({n: state[n] for n in mask}, mask, self.profile,
                              self.max_layer_sparsity, self.stem_max_sparsity)
        chosen = runtime_allocation(curves, total, self.mass_bound)
        self.last_record = {"runtime_predicted_ms": chosen.predicted_ms,
                            "global_predicted_ms": chosen.global_predicted_ms,
                            "runtime_mass_ratio": chosen.record()["mass_ratio"]}
        log.info("runtime-aware allocation: predicted %.1f ms (global magnitude %.1f ms), "
                 "magnitude mass removed %.2fx global's", chosen.predicted_ms,
                 chosen.global_predicted_ms, self.last_record["runtime_mass_ratio"])
        return chosen.zeros


def profile_for_run(model: nn.Module, names: Sequence[str], *, arch: str, backbone: str,
                    image_size: int, cores: int, given: Optional[str], run_copy: Path,
                    progress: bool) -> dict[str, Any]:
    """The run's latency profile: `given` (a file) as it is, else the cached one for this
    machine / model / image size, built (or finished) first. A copy goes to `run_copy`."""
    if given:
        source = Path(given)
        data = build_profile(model, names, image_size, cores, source, arch=arch,
                             backbone=backbone, progress=progress)
    else:
        shapes = layer_input_shapes(model, names, image_size)
        key = profile_key(model, names, shapes, arch, backbone, image_size, cores)
        source = default_profile_path(key)
        data = build_profile(model, names, image_size, cores, source, arch=arch,
                             backbone=backbone, progress=progress)
    if source.resolve() != run_copy.resolve():
        run_copy.parent.mkdir(parents=True, exist_ok=True)
        write_json(run_copy, data)
    log.info("latency profile %s (%d layers)", source, len(data["layers"]))
    return data
