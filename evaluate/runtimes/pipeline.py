"""Run a partitioned deployment (`export/deploy/manifest.json`) of an R-CNN end to end.

Parts run in the manifest's order, each reading the tensors earlier parts produced. Parts marked
`deepsparse` run in one long-lived DeepSparse child (`deepsparse_server`), every other part on
ONNX Runtime in this process; with `engine="onnxruntime"` every part runs on ONNX Runtime (the
reference). Images go onto the manifest's fixed canvas first (resized with their aspect kept,
placed top-left, zero-padded), so DeepSparse compiles once; detections are mapped back to the
image. A part with a padding rule takes a data-dependent count of RoIs along `axis`: the count is
zero-padded to the smallest compiled bucket that holds it, outputs are cut back to the count, and
a count of zero skips the part (empty outputs). A part with runtime `torch` is one of torchvision's
own post-processing functions run eagerly (`TORCH_OPS`): Mask R-CNN's mask pasting, which the
exported graph carries as an ONNX Loop that ONNX Runtime runs mask by mask, ten times slower; its
ONNX file stays in the folder as the reference the export parity checks it against.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks, maskrcnn_inference

from compress.core.deploy_manifest import Part
from compress.core.errors import ModelFileError
from compress.evaluate.runtimes.deepsparse_server import DeepSparseFailed, DeepSparseServer, EngineSpec
from compress.evaluate.runtimes.manifest import deployment_intact, read_manifest  # noqa: F401
from compress.evaluate.runtimes.ort import ort_session, physical_cores
from compress.evaluate.engines import DEPLOYMENT_ENGINES, OPENVINO_ENGINES
from compress.evaluate.runtimes.openvino_engine import OpenVinoModel
from compress.evaluate.runtimes.roi_align import multiscale_roi_align


@dataclass(frozen=True)
class Placement:
    """Where an image sits on the canvas: its scale and the size it has there."""

    scale: float
    height: int
    width: int
    original: tuple[int, int]


def to_canvas(image: torch.Tensor, height: int, width: int) -> tuple[np.ndarray, Placement]:
    """`image` (3xHxW in [0, 1]) resized to fit height x width, aspect kept, top-left, zero pad."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    scale = min(height / h, width / w)
    new_h, new_w = min(height, round(h * scale)), min(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = torch.nn.functional.interpolate(image[None].float(), size=(new_h, new_w),
                                                mode="bilinear", align_corners=False)[0]
    canvas = np.zeros((3, height, width), dtype=np.float32)
    canvas[:, :new_h, :new_w] = image.detach().cpu().float().numpy()
    return canvas, Placement(scale, new_h, new_w, (h, w))


def keep_scores(outputs: dict[str, Any], score_threshold: float | None) -> dict[str, Any]:
    """Only the detections scoring >= `score_threshold`: every output with one row per detection
    filtered, numpy arrays and torch tensors alike (each stays what it was). None, or no
    `scores`, keeps everything. The one score filter of the deployment and `compress predict`."""
    if score_threshold is None or "scores" not in outputs:
        return outputs
    scores = outputs["scores"]
    scores = scores.detach().cpu().numpy() if torch.is_tensor(scores) else np.asarray(scores)
    keep = scores.reshape(-1) >= score_threshold
    kept = {}
    for name, value in outputs.items():
        if tuple(getattr(value, "shape", ()))[:1] != keep.shape:
            kept[name] = value  # not one row per detection
        elif torch.is_tensor(value):
            kept[name] = value[torch.from_numpy(keep).to(value.device)]
        else:
            kept[name] = np.asarray(value)[keep]
    return kept


def from_canvas(outputs: dict[str, np.ndarray], place: Placement, *,
                score_threshold: float | None = None) -> dict[str, torch.Tensor]:
    """Detections on the canvas -> on the original image (boxes, masks, keypoints). With
    `score_threshold`, only detections scoring >= it are kept (`keep_scores`), before masks are
    upsampled to the image (one mask of a 13000 px image is 676 MB)."""
    outputs = keep_scores(outputs, score_threshold)
    out = {name: torch.from_numpy(_owned(value)) for name, value in outputs.items()}
    h, w = place.original
    if "boxes" in out:
        boxes = out["boxes"] / place.scale
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        out["boxes"] = boxes
    if "keypoints" in out:
        out["keypoints"][..., :2] /= place.scale
    if "masks" in out:
        masks = out["masks"][..., :place.height, :place.width]
        if (place.height, place.width) != (h, w) and masks.shape[0]:
            masks = torch.nn.functional.interpolate(masks, size=(h, w), mode="bilinear",
                                                    align_corners=False)
        out["masks"] = masks
    return out


def _owned(value: Any) -> np.ndarray:
    """`value` as an array the caller may keep and change: a copy only where it must be (not an
    array, read-only, or a view on DeepSparse's shared buffers, which the next run overwrites);
    copying 100 pasted masks at 512 px (100 MB) cost up to 0.3 s a call."""
    array = np.asarray(value)
    shared = isinstance(array, np.memmap) or isinstance(array.base, np.memmap)
    return array.copy() if shared or not array.flags.writeable else array


def on_canvas(detector: Any, height: int, width: int, *,
              score_threshold: float | None = None) -> Any:
    """`detector` (image -> outputs) run on the deployment's canvas, outputs mapped back: the
    full graph then sees exactly what the deployment sees. With `score_threshold`, only the
    detections scoring >= it are mapped back (`from_canvas`)."""
    def predict(image: torch.Tensor) -> dict[str, torch.Tensor]:
        array, place = to_canvas(image, height, width)
        outputs = detector(torch.from_numpy(array))
        return from_canvas({name: np.asarray(value) for name, value in outputs.items()}, place,
                           score_threshold=score_threshold)
    return predict


def paste_masks(logits: np.ndarray, labels: np.ndarray, boxes: np.ndarray, *, height: int,
                width: int) -> list[np.ndarray]:
    """Mask R-CNN's mask post-processing, as torchvision runs it: the predicted class's mask
    logits (N x C x M x M) through a sigmoid, pasted into their boxes on a height x width image."""
    if len(boxes) == 0:
        return [np.zeros((0, 1, height, width), dtype=np.float32)]
    probs = maskrcnn_inference(torch.from_numpy(np.asarray(logits)),
                               [torch.from_numpy(np.asarray(labels)).long()])[0]
    return [paste_into_image(probs, torch.from_numpy(np.asarray(boxes)), height, width).numpy()]


def paste_into_image(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                     padding: int = 1) -> torch.Tensor:
    """torchvision's `paste_masks_in_image`, value for value, into one preallocated N x 1 x H x W
    tensor: torchvision builds a full image per mask and stacks them (two passes over N x H x W,
    half the time at 800 px). Same steps: masks padded and boxes scaled by `expand_masks` /
    `expand_boxes`, each mask resized (bilinear) to its integer box and cut to the image."""
    masks, scale = expand_masks(masks, padding=padding)
    corners = expand_boxes(boxes, scale).to(dtype=torch.int64).tolist()
    # numpy's zeros come from calloc: fresh pages the OS zeroes lazily, so only the pixels inside
    # the boxes are ever written (100 masks at 800 px: 256 MB that torch.zeros would memset;
    # the paste took 95 ms that way, 32 ms this way)
    out = torch.from_numpy(np.zeros((len(corners), 1, height, width),
                                    dtype=torch.empty(0, dtype=masks.dtype).numpy().dtype))
    for index, (bx0, by0, bx1, by1) in enumerate(corners):
        x0, x1, y0, y1 = max(bx0, 0), min(bx1 + 1, width), max(by0, 0), min(by1 + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        size = (max(by1 - by0 + 1, 1), max(bx1 - bx0 + 1, 1))
        resized = torch.nn.functional.interpolate(masks[index:index + 1], size=size, mode="bilinear",
                                                  align_corners=False)[0, 0]
        out[index, 0, y0:y1, x0:x1] = resized[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    return out


TORCH_OPS = {"paste_masks": paste_masks, "multiscale_roi_align": multiscale_roi_align}


class OnnxDetector:
    """`detector(image)` -> {boxes, labels, scores[, masks][, keypoints, keypoints_scores]}.

    `image` is a 3xHxW float tensor in [0, 1]; outputs are CPU tensors shaped as torchvision's
    eval-mode outputs (masks N x 1 x H x W probabilities, keypoints N x K x 3).
    """

    def __init__(self, onnx_path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
                 spinning: bool = True):
        self.session = ort_session(onnx_path, provider=provider, threads=threads, spinning=spinning)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        array = image.detach().cpu().float().numpy()
        values = self.session.run(None, {self.input_name: np.ascontiguousarray(array)})
        return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(self.output_names, values)}


def predict_onnx(detector: OnnxDetector, loader: Iterable[Any]) -> list[tuple[int, dict]]:
    """(image_id, outputs) for every image of a detection loader (batches of (images, targets))."""
    out: list[tuple[int, dict]] = []
    for images, targets in loader:
        for image, target in zip(images, targets):
            image_id = target["image_id"]
            out.append((int(image_id.item() if torch.is_tensor(image_id) else image_id), detector(image)))
    return out


def _bucket(part: Part, count: int) -> int:
    sizes = [c["inputs"][0][part.padding["axis"]] for c in part.compiled]
    fitting = [i for i, size in enumerate(sizes) if size >= count]
    if not fitting:
        raise DeepSparseFailed(f"{part.name}: {count} RoIs exceed the largest compiled "
                               f"count {max(sizes)}")
    return min(fitting, key=lambda i: sizes[i])


class DeployedDetector:
    """`detector(image)` -> torchvision-style outputs, through the partitioned deployment.

    `timings_ms` holds the last call's time per part (plus `canvas` and `restore`). Close it (or
    use it as a context manager) to stop the DeepSparse child.
    """

    def __init__(self, folder: str | os.PathLike, engine: str = "deepsparse",
                 threads: int | None = None, run_timeout_s: float = 120.0,
                 compile_timeout_s: float = 900.0) -> None:
        if engine not in DEPLOYMENT_ENGINES:
            raise ValueError(f"engine must be one of {DEPLOYMENT_ENGINES}, got {engine!r}")
        self.manifest = read_manifest(folder)
        self.folder = self.manifest.folder
        self.engine = engine
        self.parts = self.manifest.parts
        self.threads = threads or physical_cores()
        self.timings_ms: dict[str, float] = {}
        self.server: DeepSparseServer | None = None
        self.sessions = {p.name: ort_session(self.folder / p.file, threads=self.threads,
                                            spinning=False, user_file=False)
                         for p in self.parts
                         if not self._heavy_elsewhere(p) and p.runtime != "torch"}
        self.openvino = {(p.name, i): OpenVinoModel(self.folder / p.file, c["inputs"],
                                                    engine=engine, threads=self.threads)
                         for p in self.parts if self._on_openvino(p)
                         for i, c in enumerate(p.compiled)}
        if any(self._on_deepsparse(p) for p in self.parts):
            self.server = DeepSparseServer(self._specs(), num_cores=self.threads,
                                           compile_timeout_s=compile_timeout_s,
                                           run_timeout_s=run_timeout_s)

    def _on_deepsparse(self, part: Part) -> bool:
        return self.engine == "deepsparse" and part.runtime == "deepsparse"

    def _on_openvino(self, part: Part) -> bool:
        """engine openvino*: the parts DeepSparse would run (the competitor on the same cut)."""
        return self.engine in OPENVINO_ENGINES and part.runtime == "deepsparse"

    def _heavy_elsewhere(self, part: Part) -> bool:
        return self._on_deepsparse(part) or self._on_openvino(part)

    def _specs(self) -> list[EngineSpec]:
        return [EngineSpec(f"{p.name}/{i}", str(self.folder / p.file),
                           tuple(map(tuple, c["inputs"])), tuple(map(tuple, c["outputs"])))
                for p in self.parts if self._on_deepsparse(p) for i, c in enumerate(p.compiled)]

    @property
    def part_engines(self) -> dict[str, str]:
        """What runs each timed part: deepsparse, onnxruntime or torch (canvas and restore are
        the host's own resizing and copying)."""
        engines = {"canvas": "host"}
        for part in self.parts:
            engines[part.name] = ("deepsparse" if self._on_deepsparse(part) else
                                     self.engine if self._on_openvino(part) else
                                     "torch" if part.runtime == "torch" else "onnxruntime")
        return {**engines, "restore": "host"}

    @property
    def supported_op_fraction(self) -> dict[str, Any]:
        return self.server.info if self.server else {}

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        canvas = self.manifest.canvas
        tick = time.perf_counter()
        array, place = to_canvas(image, canvas.height, canvas.width)
        self.timings_ms = {"canvas": (time.perf_counter() - tick) * 1000.0}
        outputs = self.run_canvas(array)
        tick = time.perf_counter()
        restored = from_canvas(outputs, place)
        self.timings_ms["restore"] = (time.perf_counter() - tick) * 1000.0
        return restored

    def run_canvas(self, canvas: np.ndarray, *, keep_all: bool = False) -> dict[str, np.ndarray]:
        """The graph's outputs for one canvas-sized 3xHxW image (canvas coordinates); with
        `keep_all`, every tensor that crossed a part border too."""
        tensors: dict[str, np.ndarray] = {self.manifest.input: canvas}
        for part in self.parts:
            tick = time.perf_counter()
            values = self._run_part(part, [tensors[name] for name in part.inputs])
            tensors.update(zip(part.outputs, values))
            self.timings_ms[part.name] = (time.perf_counter() - tick) * 1000.0
        return tensors if keep_all else {name: tensors[name] for name in self.manifest.outputs}

    def _run_part(self, part: Part, inputs: list[np.ndarray]) -> list[np.ndarray]:
        padding = part.padding
        count = int(inputs[0].shape[padding["axis"]]) if padding else None
        if padding and count == 0:
            shapes = part.compiled[0]["outputs"]
            return [np.zeros((0, *shape[1:]), dtype=np.float32) for shape in shapes]
        if part.runtime == "torch":
            canvas = self.manifest.canvas
            params = part.params or {"height": canvas.height, "width": canvas.width}
            return TORCH_OPS[part.op](*inputs, **params)
        if not self._heavy_elsewhere(part):
            session = self.sessions[part.name]
            return session.run(part.outputs, dict(zip(part.inputs, inputs)))
        index = _bucket(part, count) if padding else 0
        compiled = part.compiled[index]["inputs"]
        if padding:
            inputs = [_pad(a, shape[0]) for a, shape in zip(inputs, compiled)]
        if self._on_openvino(part):
            outputs = self.openvino[(part.name, index)].run(inputs)
        else:
            outputs = self.server.run(f"{part.name}/{index}", inputs)
        return [out[:count] for out in outputs] if padding else outputs

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def __enter__(self) -> "DeployedDetector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _pad(array: np.ndarray, rows: int) -> np.ndarray:
    if array.shape[0] == rows:  # the usual case for the box head (the RPN keeps its top count)
        return array
    padded = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    padded[: array.shape[0]] = array
    return padded
