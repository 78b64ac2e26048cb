"""Turn a validated recipe into the plain objects the stages take: data, model factory, schedule."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from compress.core.atomic import write_json
from compress.recipe.schema import Recipe
from compress.training.round import Schedule
from compress.data.loaders import build_dataset
from compress.data.synth import split_seed, split_settings, write_synthetic_splits
from compress.data.synth_marker import MARKER, describe, folder_state, read_marker
from compress.core.errors import DataError
from compress.data.voc import voc_to_coco
from compress.models.build import ARCH_TASK, build_model
from compress.training.schedule import parse_duration
from compress.core.errors import RecipeError
from compress.lottery.methods import METHODS
from compress.data.loaders import make_loader
from compress.evaluate.metrics.scorer import Scorer

log = logging.getLogger(__name__)


@dataclass
class DataBundle:
    task: str
    train: Any
    val: Any
    gt_path: Path
    num_classes: int
    label_to_cat_id: dict[int, int]
    scorer: Scorer  # how every engine's results on `val` are scored


def prepare_data(recipe: Recipe, data_dir: Path) -> DataBundle:
    """Datasets for the recipe; synthetic data is generated once, into `data_dir` (the run
    folder's) or into `data.root` only where `check_synthetic_root` allows it."""

    cfg, task = recipe.data, ARCH_TASK[recipe.model.arch]
    if cfg.dataset == "synthetic":
        root = Path(cfg.root) if cfg.root else data_dir
        splits = ("train", "val")
        _ensure_synthetic(root, task, cfg, user_root=bool(cfg.root))
    else:
        root, splits = Path(cfg.root), (cfg.train_split, cfg.val_split)
    train = build_dataset(cfg.dataset, root, splits[0], task, train=True)
    val = build_dataset(cfg.dataset, root, splits[1], task, train=False)
    gt_path = ground_truth_path(cfg.dataset, val, root, splits[1], data_dir)
    label_to_cat_id = dict(val.label_to_cat_id)
    scorer = Scorer(gt_path, label_to_cat_id, task, recipe.evaluate.convention,
                    voc=cfg.dataset == "voc")
    return DataBundle(task, train, val, gt_path, train.num_classes, label_to_cat_id, scorer)


def synthetic_settings(task: str, cfg: Any) -> dict[str, dict[str, Any]]:
    """The marker settings of the train and val splits `data.synthetic` asks for."""
    syn = cfg.synthetic
    return {split: split_settings(task, count, split_seed(syn.seed, index), syn.image_size,
                                  syn.difficulty)
            for index, (split, count) in enumerate((("train", syn.train_images),
                                                    ("val", syn.val_images)))}


def check_synthetic_root(root: Path, task: str, cfg: Any) -> bool:
    """Whether a user's `data.root` must be generated (True) or holds this very set (False);
    raises DataError for any other folder: a user's files are never written over."""
    state = folder_state(root, synthetic_settings(task, cfg))
    if state in ("missing", "empty", "partial"):  # partial: our own generation, interrupted
        return True
    if state == "ready":
        return False
    fix = ("leave data.root unset (the data is generated in the run folder), name a new or empty "
           "folder, or read the folder as it is with data.dataset: coco")
    if state == "other":
        marked = read_marker(root)["splits"]
        split = next(s for s, v in synthetic_settings(task, cfg).items() if marked.get(s) != v)
        raise DataError(f"'{root}' holds a synthetic set generated with other settings ({split}: "
                        f"{describe(marked[split]) if split in marked else 'missing'}); it is "
                        f"not regenerated: {fix}", key="data.root")
    raise DataError(f"'{root}' holds files lth-compress did not generate (no {MARKER}); "
                    f"synthetic data is never written into a user's folder: {fix}", key="data.root")


def _ensure_synthetic(root: Path, task: str, cfg: Any, user_root: bool) -> None:
    """Generate unless the folder holds this very set; the run folder's own `data/` (not
    `user_root`) is the run's alone, so whatever an interrupted or older run left there is
    regenerated, never refused."""
    if user_root and not check_synthetic_root(root, task, cfg):
        return
    if not user_root and folder_state(root, synthetic_settings(task, cfg)) == "ready":
        return
    log.info("generating synthetic %s data (%d train / %d val images) in %s", task,
             cfg.synthetic.train_images, cfg.synthetic.val_images, root)
    write_synthetic_splits(root, task, cfg.synthetic.train_images, cfg.synthetic.val_images,
                           seed=cfg.synthetic.seed, image_size=cfg.synthetic.image_size,
                           difficulty=cfg.synthetic.difficulty, key="data.root",
                           own_folder=not user_root)


def ground_truth_path(kind: str, val: Any, root: Path, split: str, data_dir: Path) -> Path:
    """The COCO-format ground truth file of a validation set (VOC: bridged into data_dir once)."""
    if kind == "voc":
        path = data_dir / f"voc_{split}_gt.json"
        if not path.is_file():
            write_json(path, voc_to_coco(root, split), indent=None)
        return path
    return Path(val.gt_path)


def model_factory(recipe: Recipe, data: DataBundle) -> Callable[[], nn.Module]:
    m = recipe.model
    heads = recipe.model.heads

    def build() -> nn.Module:
        return build_model(m.arch, m.backbone, data.num_classes, trainable_layers=m.trainable_layers,
                           norm=m.norm, weights_path=m.weights, backbone_weights_path=m.backbone_weights,
                           min_size=m.min_size, max_size=m.max_size, heads=heads)
    return build


def iterations_per_epoch(dataset_len: int, batch_size: int, world_size: int = 1) -> int:
    """Steps per epoch at the global batch (a DistributedSampler pads each shard to equal size)."""
    per_rank = batch_size // world_size
    return max(1, math.ceil(math.ceil(dataset_len / world_size) / per_rank))


def make_schedule(recipe: Recipe, iters_per_epoch: int) -> Schedule:
    t = recipe.train
    total = t.iterations if t.iterations is not None else max(1, round(t.epochs * iters_per_epoch))
    steps = tuple(parse_duration(s, iters_per_epoch) for s in t.lr_steps)
    return Schedule(total_iterations=total, iterations_per_epoch=iters_per_epoch, lr=t.lr,
                    momentum=t.momentum, weight_decay=t.weight_decay,
                    warmup_iterations=t.warmup_iters, warmup_factor=t.warmup_factor,
                    lr_steps=steps, lr_gamma=t.lr_gamma, grad_clip=t.grad_clip, amp=t.amp,
                    log_every=t.log_every)


def check_rewind(recipe: Recipe, iters_per_epoch: int, source: Optional[str] = None) -> None:
    """Refuse a rewind point past the end of a round's training (it would never be captured).

    `compress.recipe.schema.rewind_beyond_schedule` refuses it at validation when the rewind point
    and the training length share a unit; in mixed units the iterations per epoch decide.
    """
    lot = recipe.lottery
    if not METHODS[lot.method].pruning_rounds(lot):
        return
    total = make_schedule(recipe, iters_per_epoch).total_iterations
    rewind_at = parse_duration(lot.rewind, iters_per_epoch)
    if rewind_at > total:
        raise RecipeError(f"'{lot.rewind}' is iteration {rewind_at}, beyond the end of a round's "
                          f"training ({total} iterations at {iters_per_epoch} per epoch); the "
                          "rewind point must lie within it", file=source, key="lottery.rewind")


def train_images_known(recipe: Recipe) -> Optional[int]:
    """The training set size the recipe alone fixes: generated synthetic data (None otherwise).

    Called before the run folder is claimed, so a synthetic `data.root` that may not be written
    into (`check_synthetic_root`) is refused here, before anything is written."""
    cfg = recipe.data
    if cfg.dataset != "synthetic":
        return None
    if cfg.root:
        check_synthetic_root(Path(cfg.root), ARCH_TASK[recipe.model.arch], cfg)
    return cfg.synthetic.train_images


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("'cuda' is not available on this machine; allowed: auto, cpu",
                          key="train.device")
    return torch.device(name)


def make_loaders(recipe: Recipe, data: DataBundle, max_eval_images: int | None = None,
                 world_size: int = 1) -> dict[str, Any]:
    """Train loaders (a factory: one seeded loader per epoch) and the validation loaders.

    Under torchrun each rank takes batch_size / world_size images of a DistributedSampler shard,
    so the global batch is the recipe's.
    """

    t, workers = recipe.train, recipe.data.num_workers
    if t.batch_size % world_size:
        raise RecipeError(f"{t.batch_size} is not divisible by the {world_size} processes; the global "
                          "batch is split evenly across them", key="train.batch_size")
    per_rank = t.batch_size // world_size
    val = data.val
    if max_eval_images is not None and len(val) > max_eval_images:
        val = torch.utils.data.Subset(val, range(max_eval_images))
    return {
        "train_factory": lambda seed: make_loader(data.train, per_rank, shuffle=True, seed=seed,
                                                  num_workers=workers, distributed=world_size > 1),
        "val_loss": make_loader(val, t.batch_size, shuffle=False, seed=0, num_workers=workers),
        "val": make_loader(val, t.batch_size, shuffle=False, seed=0, num_workers=workers),
    }
