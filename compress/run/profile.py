"""`compress profile RECIPE`: build (or finish, or reuse) the recipe model's DeepSparse latency profile.

The profile covers the prunable layers the recipe's lottery section selects, at the image size a
run would use (export.image_size, else model.min_size), on this machine's physical cores. The
predictors' class counts do not change a prunable layer, so the model is built with COCO's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from compress.lottery.profile import build_profile, default_profile_path, layer_input_shapes, profile_key
from compress.models.build import build_model
from compress.models.prunable import select_prunable
from compress.recipe.load import load_recipe
from compress.evaluate.runtimes.ort import physical_cores
from compress.evaluate.runtimes.protocol import OTHER_WORK_LIMIT
from compress.run.checks import tag

log = logging.getLogger(__name__)
COCO_CLASSES = 91


def profile_recipe(recipe_path: Path, *, out: Optional[Path] = None, smoke: bool = False,
                   overrides: list[str] = (), progress: bool = True,
                   cores: Optional[int] = None) -> tuple[Path, dict[str, Any]]:
    """Returns (profile file, profile)."""
    recipe = load_recipe(recipe_path, smoke=smoke, overrides=list(overrides))
    m, lot = recipe.model, recipe.lottery
    model = build_model(m.arch, m.backbone, COCO_CLASSES, trainable_layers=m.trainable_layers,
                        norm=m.norm, min_size=m.min_size, max_size=m.max_size,
                        heads=m.heads)
    names = select_prunable(model, scope=lot.scope, include=lot.include or None,
                            exclude=lot.exclude or None)
    image_size = recipe.image_size
    cores = cores or physical_cores()
    if out is None:
        shapes = layer_input_shapes(model, names, image_size)
        out = default_profile_path(profile_key(model, names, shapes, m.arch, m.backbone,
                                               image_size, cores))
    data = build_profile(model, names, image_size, cores, out, arch=m.arch, backbone=m.backbone,
                         progress=progress)
    note = profile_load(data)
    if note:
        log.warning("profile %s: %s; rebuild it on an idle machine (delete it, rerun)", out, note,
                    extra=tag("under_load"))
    return out, data


def profile_load(data: dict[str, Any]) -> Optional[str]:
    """How much of a profile was timed under load ("12 of 40 layers timed under load, up to 1.20
    cores of other work"), or None when none was."""
    loads = [entry.get("other_cpu_cores") for entry in data.get("layers", {}).values()]
    loaded = [v for v in loads if v is not None and v > OTHER_WORK_LIMIT]
    if not loaded:
        return None
    return (f"{len(loaded)} of {len(loads)} layers timed under load (up to {max(loaded):.2f} "
            f"cores of other work): their latencies are noisy")


def format_profile(data: dict[str, Any]) -> str:
    """One line per layer: latency at each grid sparsity."""
    grid = data["grid"]
    head = f"{'layer':<48}" + "".join(f"{s:>8.0%}" for s in grid)
    lines = [head, "-" * len(head)]
    for name, entry in data["layers"].items():
        cells = ("".join(f"{v:>8.2f}" for v in entry["latency_ms"]) if entry["status"] == "ok"
                 else f"  {entry['status']}: {entry.get('reason')}")
        lines.append(f"{name[-48:]:<48}{cells}")
    flags = data["key"]["flags"]
    flags = [name for name, has in flags.items() if has] if isinstance(flags, dict) else flags
    lines.append("DeepSparse ms per layer (fastest pass) at each weight sparsity, batch 1 "
                 f"({data['key']['cores']} cores, {data['key']['cpu']}, {','.join(flags)})")
    return "\n".join(lines)
