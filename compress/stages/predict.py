"""`compress predict MODEL IMAGE_OR_DIR --out DIR`: run a deployed model on the user's images.

MODEL is an export folder (`RUN/export`: its DeepSparse deployment with `--engine deepsparse`,
the default, or the full graph on the same canvas with `--engine onnxruntime`), the exported full graph (`export/model.onnx`, run with ONNX Runtime) or a torch ticket /
round checkpoint (`ticket.pt`, `rounds/round_<k>/checkpoint.pt`, rebuilt from the run folder's
recipe.yaml). Writes one annotated PNG per image (`<stem>.png`) and `detections.json` in COCO
results format (every detection scoring >= --score-threshold).

Labels map back to COCO category ids (and names) through the run's validation annotations, found
from the run folder that holds MODEL. Image ids: an image whose file name matches one in those
annotations gets that image's id, so `compress evaluate --gt <run val annotations> --results
detections.json` scores it; any other image gets a running id above the largest annotated id.
An ONNX file outside a run folder works too: the task follows from its outputs, category id =
label, and image ids run from 1.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.core.atomic import write_bytes, write_json
from compress.core.errors import DataError, ModelFileError, UserError
from compress.data.loaders import build_dataset
from compress.recipe.load import load_resolved
from compress.models.build import ARCH_TASK
from compress.run.loaded import run_of
from evaluate.runtimes.deepsparse_server import DeepSparseFailed
from evaluate.runtimes.onnx_predict import OnnxDetector
from evaluate.runtimes.pipeline import DeployedDetector, on_canvas, read_manifest
from compress.run.loaded import load_model
from evaluate.metrics.detections import outputs_to_coco_results
from compress.report.drawing import draw_detections
from compress.report.drawing import side_by_side
from compress.report.page import Missing

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
Predictor = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class LabelInfo:
    """How a run's labels read back: task, label -> COCO category id / name, GT file and images."""

    task: str
    label_to_cat_id: dict[int, int] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    gt_path: Path | None = None
    image_dir: Path | None = None
    image_ids: dict[str, int] = field(default_factory=dict)


def collect_images(path: Path) -> list[Path]:
    """The image files at `path` (one file, or a folder's images, sorted; not recursive)."""
    if not path.exists():
        raise DataError("no such file or folder; expected an image or a folder of images",
                        file=str(path))
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)})",
                        file=str(path))
    return files


def read_image(path: Path) -> torch.Tensor:
    """A 3xHxW float tensor in [0, 1]; a file PIL cannot read is a one-line DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"not a readable image ({type(err).__name__}); allowed: "
                        f"{', '.join(IMAGE_SUFFIXES)}", file=str(path)) from err
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def run_label_info(run_root: Path) -> LabelInfo:
    """Label mapping, GT file and validation image folder of a run folder (from its recipe)."""

    recipe = load_resolved(run_root / "recipe.yaml")
    task = ARCH_TASK[recipe.model.arch]
    kind = recipe.data.dataset
    root = Path(recipe.data.root) if recipe.data.root else run_root / "data"
    split = "val" if kind == "synthetic" else recipe.data.val_split
    try:
        dataset = build_dataset(kind, root, split, task, train=False)
    except DataError as err:
        log.warning("label names unavailable (%s); category id = label", err)
        return LabelInfo(task)
    names = dict(enumerate(getattr(dataset, "class_names", [])))
    names.pop(0, None)
    info = LabelInfo(task, dict(dataset.label_to_cat_id), names, image_dir=getattr(dataset, "image_dir", None))
    gt_path = getattr(dataset, "gt_path", None)
    if gt_path is not None and kind != "voc":
        info.gt_path = Path(gt_path)
        info.image_ids = {img["file_name"]: int(img["id"]) for img in dataset.coco.dataset["images"]}
    return info


def assign_image_ids(files: list[Path], known: dict[str, int]) -> list[int]:
    """The annotated id where the file name matches, else a running id above every known id."""
    next_id = max(known.values(), default=0) + 1
    ids = []
    for file in files:
        if file.name in known:
            ids.append(known[file.name])
        else:
            ids.append(next_id)
            next_id += 1
    return ids


def _onnx_task(output_names: list[str]) -> str:
    if "masks" in output_names:
        return "segmentation"
    return "keypoints" if "keypoints" in output_names else "detection"


def load_predictor(model_path: Path, engine: str) -> tuple[Predictor, LabelInfo]:
    """A callable image -> torchvision-style outputs, and the label info of the model's run."""

    try:
        run_root: Path | None = run_of(model_path.resolve()).root
    except UserError:
        run_root = None
    if model_path.is_dir():
        return deployment_predictor(model_path, engine), (
            run_label_info(run_root) if run_root else LabelInfo(_onnx_task(
                read_manifest(model_path)["outputs"])))
    if engine == "onnxruntime":
        detector = OnnxDetector(model_path)
        info = run_label_info(run_root) if run_root else LabelInfo(_onnx_task(detector.output_names))
        return fit_to_graph(detector, detector.session.get_inputs()[0].shape), info
    if run_root is None:
        raise ModelFileError("a torch model must sit in its run folder (recipe.yaml and rounds/ "
                             "beside or above it) so it can be rebuilt", file=str(model_path))
    return torch_predictor(model_path), run_label_info(run_root)


def deployment_predictor(export_dir: Path, engine: str) -> Predictor:
    """An export folder: its DeepSparse deployment, or (onnxruntime) its full graph on the same
    canvas, so both engines see the same pixels. Close it with `close_predictor`."""
    manifest = read_manifest(export_dir)
    if engine == "deepsparse":
        try:
            return DeployedDetector(export_dir, engine="deepsparse")
        except DeepSparseFailed as err:
            raise UserError(f"DeepSparse cannot run this deployment: {err}", key="--engine") from err
    full = Path(manifest["folder"]).parent / manifest["source"]
    canvas = manifest["canvas"]
    return on_canvas(OnnxDetector(full), canvas["height"], canvas["width"])


def close_predictor(predictor: Predictor) -> None:
    close = getattr(predictor, "close", None)
    if close is not None:
        close()


def fit_to_graph(detector: Predictor, input_shape: list[Any]) -> Predictor:
    """A graph with a fixed image size (3 x H x W static) gets each image resized to it, and its
    boxes, keypoints and masks mapped back to the image's own size; a dynamic graph runs as is."""
    fixed = [d if isinstance(d, int) else None for d in input_shape[-2:]]
    if None in fixed:
        return detector
    height, width = fixed
    log.info("the graph takes %dx%d images only: images are resized to it", height, width)

    def predict(image: torch.Tensor) -> dict[str, torch.Tensor]:
        h0, w0 = image.shape[-2:]
        if (h0, w0) == (height, width):
            return detector(image)
        resized = torch.nn.functional.interpolate(image[None], size=(height, width), mode="bilinear",
                                                  align_corners=False)[0]
        out = dict(detector(resized))
        scale = torch.tensor([w0 / width, h0 / height])
        out["boxes"] = out["boxes"] * scale.repeat(2)
        if "keypoints" in out:
            out["keypoints"] = torch.cat([out["keypoints"][..., :2] * scale, out["keypoints"][..., 2:]], -1)
        if "masks" in out and len(out["masks"]):
            out["masks"] = torch.nn.functional.interpolate(out["masks"], size=(h0, w0), mode="bilinear",
                                                           align_corners=False)
        return out
    return predict


def torch_predictor(checkpoint: Path) -> Predictor:
    """The torch model of a run folder / ticket.pt / round checkpoint as an image -> outputs call."""

    model = load_model(checkpoint).model.eval()

    def predict(image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return model([image])[0]
    return predict


def pick_engine(model_path: Path, engine: str | None) -> str:
    if model_path.is_dir():
        read_manifest(model_path)  # an export folder with its deployment, else ModelFileError
        if engine not in (None, "deepsparse", "onnxruntime"):
            raise UserError(f"engine '{engine}' cannot run an export folder; allowed: "
                            "deepsparse, onnxruntime", key="--engine")
        return engine or "deepsparse"
    suffix = model_path.suffix.lower()
    if suffix not in (".onnx", ".pt", ".pth"):
        raise ModelFileError(f"unknown model file type '{suffix}'; allowed: .onnx (exported graph), "
                             ".pt (ticket or checkpoint)", file=str(model_path))
    if not model_path.is_file():
        raise ModelFileError("file not found", file=str(model_path))
    wanted = "onnxruntime" if suffix == ".onnx" else "torch"
    if engine is not None and engine != wanted:
        raise UserError(f"engine '{engine}' cannot run a {suffix} file; allowed: {wanted}",
                        key="--engine")
    return wanted


def keep_scores(outputs: dict[str, Any], score_threshold: float) -> dict[str, Any]:
    """Only the detections scoring >= `score_threshold` (every per-detection output filtered)."""
    keep = outputs["scores"] >= score_threshold
    return {name: value[keep] for name, value in outputs.items()}


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def predict_command(model_path: Path, images_path: Path, *, engine: str | None, out: Path,
                    score_threshold: float = 0.5) -> Path:
    """Predict every image; write annotated PNGs and detections.json into `out`; return its path."""

    engine = pick_engine(model_path, engine)
    files = collect_images(images_path)
    images = [read_image(f) for f in files]  # fail on a bad image before loading the model
    predictor, info = load_predictor(model_path, engine)
    try:
        results = _predict_all(predictor, info, files, images, out, score_threshold)
    except DeepSparseFailed as err:
        raise UserError(f"DeepSparse failed: {err}", key="--engine") from err
    finally:
        close_predictor(predictor)
    target = out / "detections.json"
    write_json(target, results, indent=None)
    print(f"{len(files)} image(s), {len(results)} detection(s) >= {score_threshold}: {target}")
    return target


def _predict_all(predictor: Predictor, info: LabelInfo, files: list[Path],
                 images: list[torch.Tensor], out: Path, score_threshold: float) -> list[dict]:
    ids = assign_image_ids(files, info.image_ids)
    results: list[dict] = []
    used: set[str] = set()
    for file, image, image_id in zip(files, images, ids):
        outputs = keep_scores(predictor(image), score_threshold)
        mapping = info.label_to_cat_id or _identity(outputs["labels"])
        results += outputs_to_coco_results(image_id, outputs, mapping, info.task)
        name = _unique_name(file, used)
        drawn = draw_detections(image, outputs, class_names=info.class_names or None,
                                score_threshold=score_threshold)
        write_bytes(out / name, png_bytes(drawn))
        log.info("%s: %d detections -> %s", file.name, len(outputs["scores"]), out / name)
    return results


def _identity(labels: torch.Tensor) -> dict[int, int]:
    return {int(v): int(v) for v in labels.reshape(-1).tolist()}


def _unique_name(file: Path, used: set[str]) -> str:
    name, index = f"{file.stem}.png", 1
    while name in used or name == "detections.json":
        name, index = f"{file.stem}_{index}.png", index + 1
    used.add(name)
    return name


GALLERY_IMAGES = 3
GALLERY_SCORE_THRESHOLD = 0.3
GALLERY_MAX_SHOWN = 10


def gallery_image(run_root: Path, models: list[tuple[str, Path]], out_png: Path,
                  n_images: int = GALLERY_IMAGES,
                  score_threshold: float = GALLERY_SCORE_THRESHOLD) -> tuple[Path, str]:
    """The first validation images of the run predicted by each (title, checkpoint) of `models`
    side by side, one row per image; written to `out_png`. Returns the path and a caption."""
    from PIL import Image


    info = run_label_info(run_root)
    files = _gallery_files(info, n_images)
    for _, path in models:
        if not path.is_file():
            raise Missing(f"{path} is missing")
    predictors = [(title, torch_predictor(path)) for title, path in models]
    rows = []
    for file in files:
        image = read_image(file)
        drawn = [draw_detections(image, predict(image), class_names=info.class_names or None,
                                 score_threshold=score_threshold, min_side_px=320,
                                 max_shown=GALLERY_MAX_SHOWN)
                 for _, predict in predictors]
        rows.append(side_by_side(drawn, [f"{title}: {file.name}" for title, _ in predictors]))
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height + 8 for r in rows)), (255, 255, 255))
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + 8
    write_bytes(out_png, png_bytes(sheet))
    return out_png, (f"{len(files)} validation image(s); the best {GALLERY_MAX_SHOWN} detections "
                     f"scoring >= {score_threshold} by {' and '.join(t for t, _ in models)}")


def _gallery_files(info: LabelInfo, n_images: int) -> list[Path]:
    if info.image_dir is None or not info.image_ids:
        raise Missing("the run's validation images are not available")
    by_id = sorted(info.image_ids.items(), key=lambda item: item[1])
    files = [info.image_dir / name for name, _ in by_id if (info.image_dir / name).is_file()]
    if not files:
        raise Missing(f"no validation image found in {info.image_dir}")
    return files[:n_images]
