"""COCO (and Pascal VOC) metrics of a torch detector on the validation set (the round metric and
`eval/torch`), scored by the run's `compress.evaluate.metrics.scorer.Scorer`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.evaluate.metrics.scorer import Scorer
from compress.training.loop import predict
from compress.data.loaders import make_loader


def evaluate_torch(model: nn.Module, loader: Any, device: torch.device, scorer: Scorer,
                   out_dir: Path, progress: bool = True, dist: Any = None) -> dict[str, Any]:
    """COCO metrics (and for a VOC set the Pascal VOC metric) of `model` on the loader's images.

    Under torchrun (`dist` of more than one rank) each rank predicts its own share of the images,
    the COCO results are gathered, and rank 0 scores them (the other ranks return {}).
    """

    if dist is not None and dist.enabled:
        loader = _shard(loader, dist.rank, dist.world_size)
    predictions = predict(model, loader, device, progress=progress)
    results = scorer.results(predictions)
    if dist is not None and dist.enabled:
        results = [r for part in dist.gather(results) for r in part]
        if not dist.is_main:
            return {}
        results.sort(key=lambda r: (r["image_id"], -r["score"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    return scorer.score(results, out_dir)


def _shard(loader: Any, rank: int, world_size: int) -> Any:
    images = torch.utils.data.Subset(loader.dataset, range(rank, len(loader.dataset), world_size))
    return make_loader(images, loader.batch_size, shuffle=False, seed=0, num_workers=0)
