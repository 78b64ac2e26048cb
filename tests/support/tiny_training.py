"""A few SGD steps of a tiny Mask R-CNN on one generated batch (shared by the pruning tests)."""
from __future__ import annotations

import torch


def batch(seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """Two 64 px images, each with one box and its mask."""
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 64, 64, generator=gen) for _ in range(2)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:44] = 1
    targets = [{"boxes": torch.tensor([[12.0, 10.0, 44.0, 40.0]]), "labels": torch.tensor([1]),
                "masks": masks} for _ in images]
    return images, targets


def train_steps(model, optimizer, steps: int, after_each=None) -> None:
    model.train()
    images, targets = batch()
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_each is not None:
            after_each()


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
