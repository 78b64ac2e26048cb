"""Latency profile of a model on DeepSparse: how each prunable layer's latency responds to sparsity.

Each prunable layer is timed alone: a one-node ONNX graph (the layer, bias off, random weights
magnitude-pruned to each sparsity of the grid) at the layer's real input shape — captured with
forward hooks while the model runs one image of the recipe's size. DeepSparse 1.8 has a per-layer
timing engine (`DebugAnalysisEngine.analyze` with an imposed kernel sparsity), but it imposes one
sparsity on every layer at once and names layers after its own fused graph, so the per-layer
graphs are the reliable unit here. Layers with the same configuration and input shape (ResNet's
repeated blocks) are timed once. Every layer's graphs compile in one DeepSparse child process (a
crash is recorded as data; such a layer then counts as flat: no time to gain by pruning it).

The profile is a JSON file keyed by (CPU model + flags, cores, model, image size); a finished
layer is written atomically at once, so an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch
from scipy.optimize import isotonic_regression
from torch import nn
from tqdm import tqdm

from compress.core.atomic import write_json
from compress.core.durations import format_duration
from compress.core.errors import UserError
from compress.evaluate.runtimes.deepsparse import deepsparse_bench_files
from compress.evaluate.runtimes.protocol import cpu_identity, finish, machine
from compress.export.deploy.deconv import rewrite_deconvs

log = logging.getLogger(__name__)
GRID = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
FORMAT = 1
LAYER_FORM = 3  # layers timed as the deployment runs them (3: every sub-pixel deconvolution rewritten)


def layer_input_shapes(model: nn.Module, names: Sequence[str], image_size: int) -> dict[str, list[int]]:
    """Input shape of each `names` weight's module while `model` (eval) runs one square image.

    A detector takes a list of 3 x H x W images; other models a 1 x 3 x H x W batch. An R-CNN's
    heads take the RoI counts the deployment compiles them at, fixed by the model's settings and
    not by what its current weights detect (so `compress profile` on a fresh model and a run on
    its trained one key the same profile): the box head the RPN's post-NMS proposal count, the
    mask and keypoint heads the detections per image. Any other layer that saw no input row gets
    a batch of 1.
    """
    modules = dict(model.named_modules())
    shapes: dict[str, list[int]] = {}
    handles = []
    for name in names:
        module = modules[name.rsplit(".", 1)[0]]

        def hook(_mod, inputs, _out, name=name):
            shapes.setdefault(name, list(inputs[0].shape))
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            image = torch.rand(3, image_size, image_size)
            model([image]) if hasattr(model, "rpn") else model(image[None])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    rois = _head_rois(model)
    for name in names:
        shape = shapes.get(name)
        if shape is None:
            raise UserError(f"layer {name} did not run on a {image_size} px image; cannot profile it")
        head = next((count for prefix, count in rois.items() if name.startswith(prefix)), None)
        shapes[name] = [head or max(1, shape[0])] + shape[1:]
    return shapes


def _head_rois(model: nn.Module) -> dict[str, int]:
    """Module-name prefix -> the RoI count an R-CNN head is deployed at (none for other models)."""
    heads, rpn = getattr(model, "roi_heads", None), getattr(model, "rpn", None)
    if heads is None or rpn is None:
        return {}
    proposals, detections = int(rpn._post_nms_top_n["testing"]), int(heads.detections_per_img)
    return {"roi_heads.box_head.": proposals, **{f"roi_heads.{part}.": detections for part in
                                                 ("mask_head", "mask_predictor", "keypoint_head",
                                                  "keypoint_predictor")}}


def layer_signature(module: nn.Module, shape: Sequence[int]) -> str:
    """Configuration + input shape: layers with equal signatures have equal latency."""
    return f"{type(module).__name__}({module.extra_repr()})|{'x'.join(map(str, shape))}"


def profile_key(model: nn.Module, names: Sequence[str], shapes: Mapping[str, Sequence[int]],
                arch: str, backbone: str, image_size: int, cores: int) -> dict[str, Any]:
    modules = dict(model.named_modules())
    layers = "\n".join(f"{n}={layer_signature(modules[n.rsplit('.', 1)[0]], shapes[n])}"
                       for n in names)
    return {**cpu_identity(), "cores": int(cores), "arch": arch, "backbone": backbone,
            "layer_form": LAYER_FORM,
            "image_size": int(image_size),
            "layers_digest": hashlib.sha256(layers.encode()).hexdigest()[:16]}


def default_profile_path(key: Mapping[str, Any]) -> Path:
    """$COMPRESS_PROFILE_DIR (default ~/.cache/lth-compress/profiles) / <arch>_<backbone>_<size>_<hash>.json"""
    root = Path(os.environ.get("COMPRESS_PROFILE_DIR",
                               Path.home() / ".cache" / "lth-compress" / "profiles"))
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:12]
    return root / f"{key['arch']}_{key['backbone']}_{key['image_size']}px_{digest}.json"


def _pruned_layer(module: nn.Module, sparsity: float) -> nn.Module:
    """A copy of `module` with random weights, bias off, the smallest round(s * n) |w| zeroed."""
    layer = copy.deepcopy(module).eval().cpu().float()
    if getattr(layer, "bias", None) is not None:
        layer.bias = None
    torch.manual_seed(0)
    with torch.no_grad():
        weight = layer.weight
        weight.copy_(torch.randn_like(weight))
        count = round(sparsity * weight.numel())
        if count:
            order = weight.abs().flatten().argsort()[:count]
            weight.view(-1)[order] = 0.0
    return layer


def export_layer(module: nn.Module, shape: Sequence[int], sparsity: float, path: Path) -> None:
    """One-layer ONNX graph at `shape` (batch axis fixed), weights at `sparsity`, in the form the
    deployment runs it (a ConvTranspose as `compress.export.deploy.deconv` rewrites it)."""
    layer = _pruned_layer(module, sparsity)
    torch.onnx.export(layer, (torch.rand(*shape),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], do_constant_folding=False)
    if isinstance(module, nn.ConvTranspose2d):
        graph = onnx.load(str(path))
        if rewrite_deconvs(graph):
            onnx.save(graph, str(path))


def time_layer(module: nn.Module, shape: Sequence[int], grid: Sequence[float], cores: int,
               warmup: int, iterations: int) -> dict[str, Any]:
    """DeepSparse latency (fastest of `iterations`) of `module` at `shape` for every sparsity
    of `grid`, all compiled in one child process."""
    with tempfile.TemporaryDirectory(prefix="profile_") as tmp:
        files = []
        for index, sparsity in enumerate(grid):
            path = Path(tmp) / f"layer_{index}.onnx"
            export_layer(module, shape, sparsity, path)
            files.append((path, shape))
        result = deepsparse_bench_files(files, warmup=warmup, iterations=iterations,
                                        num_cores=cores)
    if result.get("status") != "ok":
        return {"status": result.get("status", "failed"), "reason": result.get("reason")}
    # the fastest pass: on a shared machine other work only ever slows a pass down
    return {"status": "ok", "latency_ms": [row["min_ms"] for row in result["files"]]}


def _load(path: Path, key: Mapping[str, Any], grid: Sequence[float]) -> dict[str, Any]:
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = None
        if data and data.get("key") == dict(key) and data.get("grid") == list(grid):
            return data
        log.warning("%s holds another profile (key or grid differ); rebuilding it", path)
    return {"format": FORMAT, "key": dict(key), "grid": list(grid), "layers": {}}


class _Progress:
    """Per-layer progress: a tqdm bar (n/N, ETA) on a terminal; otherwise one log line per layer
    with n/N and an ETA from the mean time of the layers timed so far and the distinct layers
    still to time (a repeated block reuses its twin's timing and costs nothing)."""

    def __init__(self, todo: Sequence[str], to_time: int, enabled: bool):
        self.total, self.to_time, self.done, self.timed, self.seconds = len(todo), to_time, 0, 0, 0.0
        self.bar = tqdm(total=self.total, desc="profile", unit="layer",
                        disable=not (enabled and sys.stderr.isatty()))

    def step(self, name: str, seconds: float | None) -> None:
        self.done += 1
        if seconds is not None:
            self.timed, self.seconds = self.timed + 1, self.seconds + seconds
        self.bar.update(1)
        if self.bar.disable:
            left = max(self.to_time - self.timed, 0)
            eta = self.seconds / self.timed * left if self.timed else 0.0
            how = f"timed in {seconds:.1f} s" if seconds is not None else "same as an earlier layer"
            log.info("profile: layer %d/%d %s %s; ETA %s", self.done, self.total, name, how,
                     format_duration(eta))

    def close(self) -> None:
        self.bar.close()


def _layer_entry(module: nn.Module, signature: str, shape: Sequence[int], timed: dict[str, Any],
                 ) -> dict[str, Any]:
    return {"signature": signature, "input_shape": list(shape), "numel": int(module.weight.numel()),
            **{k: timed[k] for k in ("status", "latency_ms", "reason", "other_cpu_cores")
               if k in timed}}


def _time_entry(module: nn.Module, shape: Sequence[int], grid: Sequence[float], cores: int,
                warmup: int, iterations: int, data: dict[str, Any]) -> dict[str, Any]:
    info = machine(cores)
    timed = time_layer(module, shape, grid, cores, warmup, iterations)
    data["machine"] = finish(info)
    timed["other_cpu_cores"] = data["machine"].get("other_cpu_cores")
    return timed


def build_profile(model: nn.Module, names: Sequence[str], image_size: int, cores: int,
                  path: Path, *, arch: str, backbone: str, grid: Sequence[float] = GRID,
                  warmup: int = 2, iterations: int = 5, progress: bool = True) -> dict[str, Any]:
    """Build (or finish, or reuse) the profile at `path`; returns it.

    Layers already in the file are kept (resume); each newly timed layer is written at once.
    Progress: see `_Progress`.
    """
    shapes = layer_input_shapes(model, names, image_size)
    data = _load(path, profile_key(model, names, shapes, arch, backbone, image_size, cores), grid)
    modules = {n: dict(model.named_modules())[n.rsplit(".", 1)[0]] for n in names}
    by_signature = {v["signature"]: v for v in data["layers"].values() if v["status"] == "ok"}
    todo = [n for n in names if n not in data["layers"]]
    signatures = {n: layer_signature(modules[n], shapes[n]) for n in todo}
    to_time = len(set(signatures.values()) - set(by_signature))
    if todo:
        log.info("profile: %d layers to time on DeepSparse (%d distinct), %d cores, into %s",
                 len(todo), to_time, cores, path)
    bar = _Progress(todo, to_time, progress)
    for name in todo:
        signature, started = signatures[name], time.monotonic()
        timed = by_signature.get(signature)
        seconds = None
        if timed is None:
            timed = _time_entry(modules[name], shapes[name], grid, cores, warmup, iterations, data)
            seconds = time.monotonic() - started
        entry = _layer_entry(modules[name], signature, shapes[name], timed)
        if entry["status"] == "ok":
            by_signature.setdefault(signature, entry)
        else:
            log.warning("profile: %s %s (%s)", name, entry["status"], entry.get("reason"))
        data["layers"][name] = entry
        write_json(path, data)
        bar.step(name, seconds)
    bar.close()
    if not todo:
        log.info("profile %s reused (%d layers)", path, len(data["layers"]))
    return data


def non_increasing(values: Sequence[float]) -> np.ndarray:
    """The least-squares non-increasing fit of `values` (SciPy's pool-adjacent-violators)."""
    return np.asarray(isotonic_regression(np.asarray(values, dtype=float), increasing=False).x)


def latency_curve(profile: Mapping[str, Any], name: str) -> np.ndarray | None:
    """A layer's latency at each grid sparsity, as the allocator and the predictions use it: the
    measured curve made non-increasing, or None for a layer not profiled (or failed).

    One compiled graph per grid point carries noise that the fastest of several runs does not
    remove (one compilation picks a better tiling than the next: the same layer read 63 ms at 50%
    and 138 ms at 70% on an idle host). An allocator searching the raw curves chases such dips,
    and the ticket it chooses is then slower than predicted. The monotone fit pools a rise with its
    neighbours, so no single grid point can be exploited; a layer whose latency truly rises with
    sparsity reads as flat there: no time to gain, which is what the allocator should conclude.
    """
    entry = profile["layers"].get(name)
    if entry is None or entry.get("status") != "ok":
        return None
    return non_increasing(entry["latency_ms"])


def predicted_latency_ms(profile: Mapping[str, Any], sparsities: Mapping[str, float]) -> dict[str, float]:
    """Per-layer latency at the given sparsities (`latency_curve`, linear between grid points; a
    layer not profiled: 0)."""
    grid = np.asarray(profile["grid"], dtype=float)
    out = {}
    for name, sparsity in sparsities.items():
        curve = latency_curve(profile, name)
        out[name] = 0.0 if curve is None else float(np.interp(sparsity, grid, curve))
    return out
