"""Distributed data parallel through PyTorch's own engine, started by `torchrun`.

`torchrun --nproc_per_node N -m compress run RECIPE` sets RANK / WORLD_SIZE / LOCAL_RANK; this
module reads them once, joins the process group (NCCL on GPUs, gloo on CPU) and gives the rest of
the toolkit a small handle: who writes (rank 0), barriers, and object broadcast / gather. A plain
`compress run` is a world of one, where every call here is a no-op.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


SINGLE = Dist()


def init_from_env(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (once); else a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    log.info("distributed: rank %d of %d (%s)", rank, world, dist.get_backend())
    return Dist(rank=rank, world_size=world, local_rank=local)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mask_digest(mask: dict[str, torch.Tensor]) -> str:
    """sha256 over a mask's names and bits (the same on every rank when the masks are equal)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(mask):
        digest.update(name.encode())
        digest.update(mask[name].bool().cpu().numpy().tobytes())
    return digest.hexdigest()


def rank_mask_digests(context: Dist, mask: dict[str, torch.Tensor]) -> list[str]:
    """Every rank's mask digest, in rank order."""
    return context.gather(mask_digest(mask))


# BatchNorm running statistics: each DDP rank updates them from its own images after the buffers
# rank 0 broadcast at the forward's start, so they are the one part of a replica that is its own.
RANK_LOCAL_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def replica_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a model state's names and tensor bytes, BatchNorm running statistics left out:
    equal on every rank when the DDP replicas hold the same weights."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        if name.rsplit(".", 1)[-1] in RANK_LOCAL_BUFFERS:
            continue
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_replica_digests(context: Dist, model: torch.nn.Module) -> list[str]:
    """Every rank's `replica_digest` of its trained model, in rank order."""
    return context.gather(replica_digest(model.state_dict()))
