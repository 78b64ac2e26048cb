"""`compress run`: recipe -> rounds -> ticket -> export -> evaluate -> bench -> report.

Each stage writes into its own part of the run folder and is skipped on `--resume` when done.
"""
from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from compress.core.errors import UserError
from compress.lottery.rounds import LotteryContext, LotterySetup
from compress.lottery.runner import run_lottery
from compress.recipe.load import load_recipe, recipe_hash, resolved_yaml, run_folder_name
from compress.recipe.schema import Recipe
from compress.core.folders import MetricsLog, RoundFolder, RunFolder
from compress.core.atomic import write_text
from compress.core.distributed import init_from_env, shutdown
from compress.run.setup import prepare_data
from compress.core.seeding import seed_everything
from compress.stages.base import StageContext
from compress.stages.sequence import run_stages
from compress.recipe.load import load_resolved
from compress.models.prunable import select_prunable
from compress.training.schedule import parse_duration
from compress.core.distributed import SINGLE
from compress.run import setup as rs
from compress.run.torch_eval import evaluate_torch
from compress.lottery.distributions import for_recipe
from compress.lottery.methods import METHODS
from compress.run.modifiers import apply_epoch_range, lr_from_modifiers, modifier_factory
from compress.core.checkpoint import load_checkpoint, save_checkpoint
from compress.lottery.masks import load_mask
from compress.run.summary_table import format_summary
from compress.lottery.runtime_aware import RuntimeAllocator, profile_for_run
from compress.lottery.profile import default_profile_path, layer_input_shapes, profile_key
from compress.run.profile import profile_load
from compress.evaluate.runtimes.ort import physical_cores
from compress.run.checks import collecting, format_warnings, run_warnings, tag
from compress.run.shortfall import gradual_shortfalls

log = logging.getLogger(__name__)


def run_recipe(recipe_path: Path, *, out: Path | None = None, resume: bool = False,
               smoke: bool = False, overrides: list[str] = (), progress: bool = True,
               refuse_loaded_profile: bool = False, force: bool = False) -> RunFolder:
    """Run the recipe into its run folder; failed checks are warned, collected into summary.json
    `warnings` and listed at the end (compress.run.checks). The folder is claimed and locked
    (`RunFolder.claim`): a user's non-empty folder that holds no run is refused unless `force`,
    a second writer gets exit 2."""
    recipe = load_recipe(recipe_path, smoke=smoke, overrides=list(overrides))
    digest = recipe_hash(recipe)
    run = RunFolder(out or Path("runs") / run_folder_name(recipe))
    run.check_claimable(allow_foreign=force)  # before any data is read or written

    dist = init_from_env(recipe.train.device)
    # a user's dataset is checked before anything is written; synthetic data lives in the run folder
    data = prepare_data(recipe, run.data) if recipe.data.dataset != "synthetic" else None
    train_images = len(data.train) if data is not None else rs.train_images_known(recipe)
    if train_images is not None:  # before the run folder is claimed or any data generated
        rs.check_rewind(recipe, rs.iterations_per_epoch(train_images, recipe.train.batch_size,
                                                        dist.world_size), str(recipe_path))
    if dist.is_main:
        _claim_run_folder(run, recipe, digest, resume)
        run.update_summary(finished=False)
        log.info("run folder %s (recipe %s)", run.root, digest)
    dist.barrier()

    seed_everything(recipe.train.seed)
    try:
        with collecting(run) if dist.is_main else nullcontext():
            records, data, loaders = find_ticket(recipe, run, progress and dist.is_main, data, dist,
                                                 refuse_loaded_profile)
            if dist.is_main:
                run_stages(StageContext(recipe, run, data, loaders, progress))
        if dist.is_main:
            run.update_summary(finished=True)
            _print_summary(run, records)
        dist.barrier()
    finally:
        shutdown()
        run.unlock()
    return run


def _claim_run_folder(run: RunFolder, recipe: Recipe, digest: str, resume: bool) -> None:
    # a user's folder was refused by check_claimable before anything was read or written; since
    # then the run may have bridged its dataset into run/data, so only the lock is taken here
    run.claim(allow_foreign=True)
    text = resolved_yaml(recipe)
    if run.recipe.is_file():
        if not resume:
            raise UserError("run folder already holds a run; add --resume to continue it or "
                            f"choose another --out", file=str(run.root))

        if recipe_hash(load_resolved(run.recipe)) != digest:
            raise UserError("--resume with a different recipe than the one this run folder holds "
                            f"(see {run.recipe}); use another --out", file=str(run.root))
        for path in run.remove_stale_temps():
            log.info("removed %s, left by an interrupted run", path)
        return
    run.root.mkdir(parents=True, exist_ok=True)
    write_text(run.recipe, text)
    run.update_summary(name=recipe.name, recipe_hash=digest, arch=recipe.model.arch,
                       backbone=recipe.model.backbone, method=recipe.lottery.method)


def lottery_setup(recipe: Recipe, run: RunFolder, model: torch.nn.Module,
                  iters_per_epoch: int, progress: bool = False, dist: Any = SINGLE,
                  refuse_loaded_profile: bool = False) -> LotterySetup:
    lot = recipe.lottery
    names = select_prunable(model, scope=lot.scope, include=lot.include or None,
                            exclude=lot.exclude or None)
    method = METHODS[lot.method]
    distribution = for_recipe(lot.distribution, lot.mask_type)
    allocate = (runtime_allocator(recipe, run, model, names, progress, dist, refuse_loaded_profile)
                if distribution.needs_profile else None)
    return LotterySetup(method=method, lottery=lot, pruning_rounds=method.pruning_rounds(lot),
                        fraction=method.fraction(lot), distribution=distribution,
                        prunable=tuple(names),
                        rewind_iteration=parse_duration(lot.rewind, iters_per_epoch),
                        early_bird=lot.early_bird,
                        controls=tuple(lot.controls),
                        control_rounds=tuple(lot.control_rounds or
                                             range(1, method.pruning_rounds(lot) + 1)),
                        seeds=tuple(lot.seeds), seed_rounds=tuple(lot.seed_rounds),
                        modifiers=modifier_factory(recipe, iters_per_epoch, tuple(names)),
                        lr_from_modifiers=lr_from_modifiers(recipe, tuple(names)),
                        allocate=allocate)


def runtime_allocator(recipe: Recipe, run: RunFolder, model: torch.nn.Module, names: list[str],
                      progress: bool, dist: Any = SINGLE,
                      refuse_loaded: bool = False) -> RuntimeAllocator:
    """The latency profile (rank 0 builds or reuses it; the others read its copy) and the
    allocator over it. Image size: export.image_size, else model.min_size."""
    cfg = recipe.lottery.runtime
    copy = run.root / "profile.json"
    if dist.is_main:
        profile_for_run(model, names, arch=recipe.model.arch, backbone=recipe.model.backbone,
                        image_size=recipe.image_size,
                        cores=physical_cores(), given=cfg.profile, run_copy=copy,
                        progress=progress)
    dist.barrier()
    profile = json.loads(copy.read_text())
    if dist.is_main or refuse_loaded:  # every rank refuses alike; rank 0 warns
        _check_profile_load(profile, cfg.profile, model, names, recipe, refuse_loaded)
    return RuntimeAllocator(profile, mass_bound=cfg.mass_bound,
                            max_layer_sparsity=cfg.max_layer_sparsity,
                            stem_max_sparsity=cfg.stem_max_sparsity)


def _check_profile_load(profile: dict[str, Any], given: str | None, model: torch.nn.Module,
                        names: list[str], recipe: Recipe, refuse: bool) -> None:
    """A profile timed under load is refused (`refuse`) or used with one warning naming it."""
    note = profile_load(profile)
    if note is None:
        return
    size = recipe.image_size
    source = Path(given) if given else default_profile_path(profile_key(
        model, names, layer_input_shapes(model, names, size), recipe.model.arch,
        recipe.model.backbone, size, physical_cores()))
    if refuse:
        raise UserError(f"latency profile: {note}; rebuild it on an idle machine (delete the "
                        "file and rerun) or drop --refuse-loaded-profile", file=str(source))
    log.warning("runtime-aware allocation uses latency profile %s: %s (refuse with "
                "--refuse-loaded-profile)", source, note, extra=tag("loaded_profile"))


def find_ticket(recipe: Recipe, run: RunFolder, progress: bool, data: Any = None,
                dist: Any = None, refuse_loaded_profile: bool = False
                ) -> tuple[list[dict[str, Any]], Any, dict]:
    """Train the rounds and write ticket.pt; returns the per-round records, data and loaders."""

    dist = dist or SINGLE

    if data is None:  # synthetic: rank 0 generates it into the run folder, the others wait
        if dist.is_main:
            rs.prepare_data(recipe, run.data)
        dist.barrier()
        data = rs.prepare_data(recipe, run.data)
    loaders = rs.make_loaders(recipe, data, recipe.evaluate.max_images, dist.world_size)
    ipe = rs.iterations_per_epoch(len(data.train), recipe.train.batch_size, dist.world_size)
    rs.check_rewind(recipe, ipe)  # synthetic data at a user's root: known only now
    schedule = rs.make_schedule(recipe, ipe)
    factory = rs.model_factory(recipe, data)
    setup = lottery_setup(recipe, run, factory(), ipe, progress, dist, refuse_loaded_profile)
    schedule = apply_epoch_range(recipe, schedule, setup.prunable)
    device = rs.pick_device(recipe.train.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if dist.is_main:
        run.update_summary(task=data.task, num_classes=data.num_classes,
                           prunable_tensors=len(setup.prunable),
                           iterations_per_round=schedule.total_iterations,
                           world_size=dist.world_size)

    def evaluate(model: torch.nn.Module, folder: RoundFolder) -> dict[str, Any]:
        return evaluate_torch(model, loaders["val"], device, data.scorer, folder.eval,
                              progress, dist)

    ctx = LotteryContext(run=run, schedule=schedule, loaders=loaders, device=device,
                         seed=recipe.train.seed, metrics=MetricsLog(run.metrics_log),
                         model_factory=factory, evaluate=evaluate, progress=progress, dist=dist)
    records = run_lottery(setup, ctx)
    if dist.is_main:
        write_ticket(run, recipe, records)
        if recipe.lottery.method == "gradual":
            epochs = schedule.total_iterations / schedule.iterations_per_epoch
            for message in gradual_shortfalls(recipe, run.round(0), setup.prunable, epochs):
                log.warning("%s", message, extra=tag("shortfall"))
    return records, data, loaders


def _print_summary(run: RunFolder, records: list[dict[str, Any]]) -> None:
    summary = run.read_summary()
    print(format_summary(summary))
    block = format_warnings(run_warnings(summary))
    if block:
        print(block)


def write_ticket(run: RunFolder, recipe: Recipe, records: list[dict[str, Any]]) -> Path:
    """ticket.pt: the last round's weights and mask, stamped with the recipe hash."""
    last = records[-1]["round"]
    folder = run.round(last)
    state = load_checkpoint(folder.checkpoint)["model"]
    mask = load_mask(folder.mask)
    save_checkpoint(run.ticket, model=state, mask=mask, round=last, recipe_hash=recipe_hash(recipe),
                    arch=recipe.model.arch, backbone=recipe.model.backbone)
    run.update_summary(ticket={"round": last, "sparsity": records[-1]["sparsity"],
                               "prunable_sparsity": records[-1]["prunable_sparsity"]})
    return run.ticket
