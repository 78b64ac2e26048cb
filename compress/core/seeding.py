"""Seeding for repeatable runs: python, numpy, torch (CPU and CUDA), data-loader workers."""
from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int, *, deterministic_algorithms: bool = False) -> None:
    """Seed python, numpy and torch; make cuDNN deterministic (cheap: no autotuning).

    `deterministic_algorithms=True` also calls `torch.use_deterministic_algorithms(True,
    warn_only=True)`; on CUDA that makes torchvision's roi_align fall back to a slow pure-python
    path, so it is off by default. CPU training is repeatable without it (same thread count).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if deterministic_algorithms:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    log.debug("seeded everything with %d", seed)


def seed_worker(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=seed_worker)`: derive numpy/python seeds from torch's worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
