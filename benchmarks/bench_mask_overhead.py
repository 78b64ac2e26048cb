"""Training step time with the lottery mask held vs dense training, same model and batch.

One model, magnitude-pruned to 50% (global); the masked arm holds the mask with
`compress.lottery.masks.MaskHolder` exactly as the lottery runner does (gradient hooks + `after_step`
after every optimizer step), the dense arm trains the same weights without it. Both train through
`compress.training.loop.train_one_epoch` on the same fixed batch, each block from the same start state
and RNG seed, so they do the same work. Blocks of `--steps` steps alternate dense/masked (the
order flips every repetition) so the load of a shared machine hits both alike; on CPU the clock is
the process's CPU time (run with one thread, the default), on CUDA wall time. The figure is the
median over repetitions of the paired ratio masked/dense. As a low-noise cross-check the holder's
own work (every gradient hook plus `after_step`) is also timed alone: 1 + holder_ms / dense_ms. Models: Mask R-CNN R-18 FPN with the
light heads at 128 px and the tiny test model at 64 px (`--models r50`: the paper's R-50 FPN at
800 px). Prints a table and writes benchmarks/results/mask_overhead.json (`--out`).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_mask_overhead.py [--reps 30] [--steps 2]
    PYTHONPATH=. python benchmarks/bench_mask_overhead.py --device cuda --models r18,tiny,r50 \
        --out benchmarks/results/mask_overhead_cuda.json
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.core.atomic import write_json
from compress.training.loop import train_one_epoch
from compress.lottery.masks import MaskHolder, apply_mask, dense_mask, magnitude_prune
from compress.models.build import build_model
from compress.recipe.load import load_recipe
from compress.models.prunable import select_prunable

OUT = Path(__file__).parent / "results" / "mask_overhead.json"
# the lightened heads the smoke run trains with
SMOKE_HEADS = load_recipe(Path(__file__).parents[1] / "recipes" / "maskrcnn_lth.yaml", smoke=True).model.heads
TARGET_RATIO = 1.05
SPARSITY = 0.5


def make_batch(size: int, images: int, seed: int = 0) -> tuple[list, list]:
    """`images` random images with two box+mask objects each (labels 1 and 2)."""
    gen = torch.Generator().manual_seed(seed)
    imgs, targets = [], []
    for _ in range(images):
        imgs.append(torch.rand(3, size, size, generator=gen))
        boxes, masks = [], []
        for _obj in range(2):
            x0, y0 = (torch.randint(0, size // 2, (2,), generator=gen)).tolist()
            w, h = (torch.randint(size // 8, size // 2, (2,), generator=gen)).tolist()
            boxes.append([x0, y0, x0 + w, y0 + h])
            mask = torch.zeros(size, size, dtype=torch.uint8)
            mask[y0:y0 + h, x0:x0 + w] = 1
            masks.append(mask)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor([1, 2]), "masks": torch.stack(masks)})
    return imgs, targets


class _Blocks:
    """Timed blocks of `steps` training steps on one model, each from the same start state.

    Every block reloads the start weights, a fresh optimizer and the same RNG seed, so the dense
    and the masked blocks do the same work (same RPN/RoI sampling); only the holder differs.
    """

    def __init__(self, model: nn.Module, mask: dict[str, torch.Tensor], batch: tuple[list, list],
                 device: torch.device, steps: int):
        self.model, self.mask, self.device = model, mask, device
        self.start = copy.deepcopy(model.state_dict())
        self.batches = [batch] * steps
        self.pruned_nonzero = 0

    def run(self, held: bool, seed: int) -> float:
        self.model.load_state_dict(self.start)
        optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad],
                                    lr=0.002, momentum=0.9, weight_decay=1e-4)
        holder = MaskHolder(self.model, self.mask) if held else None
        after_step = [holder.after_step] if holder is not None else []
        torch.manual_seed(seed)
        self._sync()
        start = self._clock()
        train_one_epoch(self.model, optimizer, self.batches, self.device, after_step=after_step,
                        progress=False, grad_clip=10.0)
        self._sync()
        elapsed = (self._clock() - start) / len(self.batches)
        if holder is not None:
            self.pruned_nonzero += holder.check(self.model)
            holder.remove()
        return elapsed

    def _clock(self) -> float:
        """CPU: this process's CPU time (other jobs on a shared machine do not count);
        CUDA: wall time."""
        return time.perf_counter() if self.device.type == "cuda" else time.process_time()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def holder_cost_ms(model: nn.Module, mask: dict[str, torch.Tensor], device: torch.device,
                   calls: int = 20) -> float:
    """The holder's own work per step, timed alone: every gradient hook plus `after_step`."""
    holder = MaskHolder(model, mask)
    params = dict(model.named_parameters())
    for name in mask:
        params[name].grad = torch.randn_like(params[name])
    hooks = [(params[name], holder._grad_hook(name)) for name in mask]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(calls):
        sync()
        start = time.perf_counter()
        for param, hook in hooks:
            hook(param)
        holder.after_step()
        sync()
        times.append(time.perf_counter() - start)
    holder.remove()
    model.zero_grad(set_to_none=True)
    return 1000 * statistics.median(times)


def bench_model(label: str, model: nn.Module, size: int, images: int, device: torch.device,
                reps: int, steps: int) -> dict[str, Any]:
    model = model.to(device)
    names = select_prunable(model, scope="all")
    weights = {n: p.detach().cpu() for n, p in model.named_parameters() if n in names}
    mask = magnitude_prune(weights, dense_mask(model, names), SPARSITY, "global")
    apply_mask(model, mask)  # both arms start from the pruned weights
    holder_ms = holder_cost_ms(model, mask, device)
    blocks = _Blocks(model, mask, make_batch(size, images), device, steps)
    blocks.run(False, 0), blocks.run(True, 0)  # warm-up
    dense, held = [], []
    for rep in range(reps):
        for arm in ((False, True) if rep % 2 == 0 else (True, False)):
            (held if arm else dense).append(blocks.run(arm, rep))
    ratios = [m / d for m, d in zip(held, dense)]
    return {"model": label, "image_size": size, "images_per_step": images,
            "prunable_tensors": len(names), "sparsity": SPARSITY,
            "dense_step_ms": 1000 * statistics.median(dense),
            "masked_step_ms": 1000 * statistics.median(held),
            "ratio": statistics.median(ratios),
            "ratio_of_medians": statistics.median(held) / statistics.median(dense),
            "holder_ms": holder_ms,
            "holder_ratio": 1 + holder_ms / (1000 * statistics.median(dense)),
            "pruned_nonzero_after": blocks.pruned_nonzero, "reps": reps, "steps_per_block": steps}


def models(names: list[str]) -> list[tuple[str, nn.Module, int, int]]:
    """(label, model, image size, images per step) for each of `names` (r18, tiny, r50)."""
    torch.manual_seed(0)
    table = {
        "r18": lambda: ("maskrcnn R-18 FPN light heads, 128 px", build_model(
            "maskrcnn", "resnet18", 3, min_size=128, max_size=128, heads=SMOKE_HEADS), 128, 2),
        "tiny": lambda: ("maskrcnn tiny, 64 px", build_model(
            "maskrcnn", "tiny", 3, min_size=64, max_size=64), 64, 2),
        "r50": lambda: ("maskrcnn R-50 FPN (paper), 800 px", build_model(
            "maskrcnn", "resnet50", 81, min_size=800, max_size=800), 800, 2),
    }
    return [table[name]() for name in names]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':40s} {'dense ms':>9s} {'masked ms':>9s} {'ratio':>7s} {'holder ms':>9s} "
          f"{'1+holder/dense':>14s}  target <= {TARGET_RATIO}")
    for row in rows:
        print(f"{row['model']:40s} {row['dense_step_ms']:9.1f} {row['masked_step_ms']:9.1f} "
              f"{row['ratio']:7.3f} {row['holder_ms']:9.1f} {row['holder_ratio']:14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed block")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--models", default="r18,tiny", help="comma list of r18, tiny, r50")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [bench_model(label, model, size, images, device, args.reps, args.steps)
            for label, model, size, images in models(args.models.split(","))]
    print_table(rows)
    write_json(args.out, {"device": str(device), "threads": args.threads,
                          "torch": torch.__version__, "target_ratio": TARGET_RATIO,
                          "method": "median of paired masked/dense block times, interleaved",
                          "clock": "wall" if device.type == "cuda" else "process CPU time",
                          "rows": rows})


if __name__ == "__main__":
    main()
