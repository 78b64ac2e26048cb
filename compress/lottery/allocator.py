"""Runtime-aware sparsity allocation: where to put a total number of zeros so DeepSparse runs fastest.

Given each layer's latency-vs-sparsity curve (`compress.lottery.profile.latency_curve`: the measured
curve made non-increasing, so one noisy grid point cannot be exploited), the layers'
current weights and masks and a target number of zeros over all prunable tensors, choose the
zeros per layer that minimise the predicted latency (the sum of the layers' latencies) subject to

- exactness: the zeros add up to the target count exactly (count arithmetic, no float totals);
- nesting: a layer never ends below its current zeros (the masks of successive rounds nest), and
  the new zeros of a layer are its smallest kept |w| (magnitude pruning within the layer);
- caps: at most `max_layer_sparsity` (0.98) of any layer, at most `stem_max_sparsity` of the
  stem (the first prunable layer: 3 input channels, few weights, every feature depends on it);
- an accuracy guard: the magnitude mass removed (sum of |w| newly pruned) stays within
  (1 + `mass_bound`) of the least mass any allocation under the same caps can remove, which is
  what global magnitude pruning removes. Global magnitude pruning is the accuracy-safe choice the
  lottery-ticket literature uses; the guard lets the allocator move zeros towards layers where
  they buy time only as far as that costs a bounded amount of extra weight magnitude.

Method: for a price `lam` on removed mass, each layer's cost is latency + lam * mass over its
candidate new-zero counts (a 0.5% sparsity grid between its floor and cap). Each cost curve is
replaced by its lower convex hull, and the hull segments of all layers are taken in order of cost
per zero, the cheapest first, until the target count is reached exactly (the last segment in
part): the optimum of this separable problem on the hulls, and every layer but the one cut in
part ends on a point of its own curve. (A Lagrangian with a bisected reward per zero, settled by
magnitude, was the first version: on flat-and-dropping DeepSparse curves whole layers jumped
together, the magnitude settling undid the choice, and at 80% it predicted 485 ms where uniform
layerwise reached 394 ms at a smaller mass cost.) `lam` is taken as small as the guard allows
(lam -> 0: latency first, mass only breaking ties; lam -> inf: global magnitude pruning under
the caps).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from compress.lottery.profile import latency_curve

log = logging.getLogger(__name__)
STEP = 0.005


@dataclass(frozen=True)
class LayerCurve:
    """What the allocator knows of one layer."""

    name: str
    numel: int
    zeros_now: int  # floor (nesting)
    zeros_max: int  # cap
    kept_sorted: np.ndarray  # |w| of the kept weights, ascending
    grid: np.ndarray  # sparsities of the latency curve
    latency_ms: np.ndarray  # latency at each grid sparsity (flat for an unprofiled layer)

    def candidates(self) -> np.ndarray:
        """New-zero counts to choose from (0 .. zeros_max - zeros_now)."""
        lo, hi = self.zeros_now / self.numel, self.zeros_max / self.numel
        levels = np.append(np.arange(lo, hi, STEP), hi)
        counts = np.clip(np.round(levels * self.numel).astype(np.int64), self.zeros_now, self.zeros_max)
        return np.unique(counts) - self.zeros_now

    def latency(self, new_zeros: np.ndarray) -> np.ndarray:
        return np.interp((self.zeros_now + new_zeros) / self.numel, self.grid, self.latency_ms)


@dataclass
class Allocation:
    zeros: dict[str, int]  # total zeros per layer after pruning
    predicted_ms: float  # sum of the layers' predicted latencies
    mass_removed: float
    mass_global: float  # least mass the same count can remove (global magnitude under the caps)
    lam: float
    global_predicted_ms: float  # predicted latency of that global magnitude allocation

    def record(self) -> dict[str, Any]:
        return {"predicted_ms": self.predicted_ms, "mass_removed": self.mass_removed,
                "mass_global": self.mass_global, "lam": self.lam,
                "global_predicted_ms": self.global_predicted_ms,
                "mass_ratio": self.mass_removed / self.mass_global if self.mass_global else 1.0}


def layer_curves(weights: Mapping[str, Tensor], mask: Mapping[str, Tensor],
                 profile: Mapping[str, Any], max_layer_sparsity: float = 0.98,
                 stem_max_sparsity: float = 0.8) -> list[LayerCurve]:
    """One curve per mask entry, in mask order (the first is the stem)."""
    grid = np.asarray(profile["grid"], dtype=float)
    curves = []
    for index, (name, kept) in enumerate(mask.items()):
        kept = kept.bool().cpu().reshape(-1)
        numel = kept.numel()
        zeros_now = numel - int(kept.sum())
        cap = stem_max_sparsity if index == 0 else max_layer_sparsity
        magnitude = weights[name].detach().cpu().reshape(-1).abs().double()[kept]
        curve = latency_curve(profile, name)
        latency = np.zeros_like(grid) if curve is None else curve
        curves.append(LayerCurve(name, numel, zeros_now, max(zeros_now, int(cap * numel)),
                                 torch.sort(magnitude).values.numpy(), grid, latency))
    return curves


def _settle(curves: Sequence[LayerCurve], picks: np.ndarray, target: int) -> np.ndarray:
    """Make sum(picks) == target exactly by magnitude: add the smallest next |w| or give back
    the largest chosen ones."""
    gap = target - int(picks.sum())
    if gap == 0:
        return picks
    pools, owners = [], []
    for i, curve in enumerate(curves):
        start = curve.zeros_now
        if gap > 0:
            pool = curve.kept_sorted[picks[i]: curve.zeros_max - start]
        else:
            pool = curve.kept_sorted[: picks[i]]
        pools.append(pool)
        owners.append(np.full(len(pool), i, dtype=np.int64))
    values, who = np.concatenate(pools), np.concatenate(owners)
    order = np.argsort(values if gap > 0 else -values, kind="stable")[: abs(gap)]
    change = np.bincount(who[order], minlength=len(curves))
    return picks + change if gap > 0 else picks - change


def _hull(counts: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of the points (counts, cost), counts ascending."""
    hull: list[int] = []
    for i in range(len(counts)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or above the segment a -> i: drop it
            if (cost[b] - cost[a]) * (counts[i] - counts[a]) >= (cost[i] - cost[a]) * (counts[b] - counts[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return np.asarray(hull, dtype=np.int64)


def _solve(tables: list[tuple], lam: float, target: int) -> np.ndarray:
    """New zeros per layer, summing to `target`, minimising sum(latency + lam * mass): every
    layer's cost curve is replaced by its lower convex hull, and hull segments are taken in order
    of cost per zero (the cheapest first, across layers) until the target is reached; the last
    segment is taken in part. Optimal for the hulls (a separable convex allocation); every layer
    but the one cut in part ends on a measured point of its own curve."""
    segments = []  # (cost per zero, layer, start, length)
    for layer, (cands, lat, mass) in enumerate(tables):
        cost = lat + lam * mass
        hull = _hull(cands, cost)
        for a, b in zip(hull[:-1], hull[1:]):
            length = int(cands[b] - cands[a])
            segments.append(((cost[b] - cost[a]) / length, layer, int(cands[a]), length))
    segments.sort(key=lambda seg: (seg[0], seg[1], seg[2]))
    picks = np.zeros(len(tables), dtype=np.int64)
    left = target
    for _, layer, _, length in segments:
        if left == 0:
            break
        step = min(length, left)
        picks[layer] += step
        left -= step
    return picks


def _mass(curves: Sequence[LayerCurve], picks: np.ndarray) -> float:
    return float(sum(c.kept_sorted[:k].sum() for c, k in zip(curves, picks)))


def runtime_allocation(curves: Sequence[LayerCurve], total_zeros: int,
                       mass_bound: float = 0.5) -> Allocation:
    """Zeros per layer (totals, floors included) summing to `total_zeros`; see the module doc."""
    floor = sum(c.zeros_now for c in curves)
    room = sum(c.zeros_max for c in curves)
    if not floor <= total_zeros <= room:
        raise ValueError(f"target {total_zeros} zeros outside [{floor} now, {room} allowed by the caps]")
    target = total_zeros - floor
    tables = []
    for c in curves:
        cands = c.candidates()
        cum = np.concatenate([[0.0], np.cumsum(c.kept_sorted)])
        tables.append((cands, c.latency(cands), cum[cands]))
    reference = global_allocation(curves, total_zeros)
    mass_global = reference.mass_removed
    scale = max(sum(float(t[1].max()) for t in tables), 1e-9) / max(mass_global, 1e-12)
    for lam in scale * np.logspace(-4, 4, 25):  # a small lam still breaks latency ties by mass
        picks = _solve(tables, lam, target)
        mass = _mass(curves, picks)
        if mass <= (1.0 + mass_bound) * mass_global + 1e-12:
            return _allocation(curves, picks, mass, mass_global, lam, reference.predicted_ms)
    return reference


def _allocation(curves: Sequence[LayerCurve], picks: np.ndarray, mass: float, mass_global: float,
                lam: float, global_predicted_ms: float | None = None) -> Allocation:
    predicted = float(sum(c.latency(np.asarray([k]))[0] for c, k in zip(curves, picks)))
    return Allocation({c.name: c.zeros_now + int(k) for c, k in zip(curves, picks)}, predicted,
                      mass, mass_global, lam,
                      predicted if global_predicted_ms is None else global_predicted_ms)


def global_allocation(curves: Sequence[LayerCurve], total_zeros: int) -> Allocation:
    """Global magnitude pruning under the same caps (the allocator's reference), for comparison."""
    target = total_zeros - sum(c.zeros_now for c in curves)
    picks = _settle(curves, np.zeros(len(curves), dtype=np.int64), target)
    mass = _mass(curves, picks)
    return _allocation(curves, picks, mass, mass, float("inf"))
