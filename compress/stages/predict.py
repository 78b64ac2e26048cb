"""`compress predict MODEL IMAGE_OR_DIR --out DIR`: run a deployed model on the user's images.

MODEL is an export folder (`RUN/export`: its DeepSparse deployment with `--engine deepsparse`,
the default, or the full graph on the same canvas with `--engine onnxruntime`), the exported full graph (`export/model.onnx`, run with ONNX Runtime) or a torch ticket /
round checkpoint (`ticket.pt`, `rounds/round_<k>/checkpoint.pt`, rebuilt from the run folder's
recipe.yaml). Writes one annotated PNG per image (`<stem>.png`), `detections.json` in COCO
results format (a list: every detection scoring >= --score-threshold, each also naming its image's
`file_name`) and `images.json`, the
COCO-style `{"images": [{id, file_name, width, height, drawn, drawn_scale}]}` naming the user's
file of each image id (`drawn`: its annotated PNG, `drawn_scale` its size / the image's: 1, or
below 1 for a huge image, drawn at the size it was predicted at). Images are read one at a time (see compress.stages.images
for the pixel cap, EXIF orientation and 16-bit scaling); detections are filtered by score before
masks are brought to the image's size (compress.stages.predictors).

Labels map back to COCO category ids (and names) through the run's validation annotations, found
from the run folder that holds MODEL. Image ids: an image whose file name matches one in those
annotations gets that image's id, so `compress evaluate --gt <run val annotations> --results
detections.json` scores it; any other image gets a running id above the largest annotated id.
An ONNX file outside a run folder works too: the task follows from its outputs, category id =
label, and image ids run from 1.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from compress.core.atomic import write_bytes, write_json
from compress.core.errors import ModelFileError, UserError
from compress.run.loaded import run_of
from compress.stages.images import IMAGE_SUFFIXES, ImageFile, check_image, collect_images
from compress.stages.images import read_pil, shrunk, to_tensor, to_uint8_rgb
from compress.stages.predictors import Predictor, close_predictor, deployment_predictor
from compress.stages.predictors import fit_to_graph, keep_scores, torch_predictor
from compress.stages.upscale import upscaled_results
from compress.evaluate.engines import DEPLOYMENT, ENGINES, FULL_GRAPH, PREDICT, TICKET, running
from compress.evaluate.runtimes.deepsparse_server import DeepSparseFailed
from compress.evaluate.runtimes.pipeline import OnnxDetector
from compress.evaluate.runtimes.pipeline import read_manifest
from compress.evaluate.metrics.detections import outputs_to_coco_results
from compress.report.drawing import draw_detections
from compress.report.gallery import LabelInfo, png_bytes, run_label_info

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "LabelInfo", "collect_images", "fit_to_graph", "keep_scores",
           "predict_command", "run_label_info"]


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


def load_predictor(model_path: Path, engine: str,
                   score_threshold: float) -> tuple[Predictor, LabelInfo]:
    """A callable image -> outputs (detections >= `score_threshold` only), and the label info of
    the model's run."""

    try:
        run_root: Path | None = run_of(model_path.resolve()).root
    except UserError:
        run_root = None
    if model_path.is_dir():
        return deployment_predictor(model_path, engine, score_threshold), (
            run_label_info(run_root) if run_root else LabelInfo(_onnx_task(
                read_manifest(model_path).outputs)))
    return _FILE_PREDICTORS[ENGINES[engine].runs](model_path, run_root, score_threshold)


def _onnx_file(model_path: Path, run_root: Path | None,
               score_threshold: float) -> tuple[Predictor, LabelInfo]:
    detector = OnnxDetector(model_path)
    info = run_label_info(run_root) if run_root else LabelInfo(_onnx_task(detector.output_names))
    return fit_to_graph(detector, detector.session.get_inputs()[0].shape, score_threshold), info


def _torch_file(model_path: Path, run_root: Path | None,
                score_threshold: float) -> tuple[Predictor, LabelInfo]:
    if run_root is None:
        raise ModelFileError("a torch model must sit in its run folder (recipe.yaml and rounds/ "
                             "beside or above it) so it can be rebuilt", file=str(model_path))
    return torch_predictor(model_path, score_threshold), run_label_info(run_root)


_FILE_PREDICTORS = {FULL_GRAPH: _onnx_file, TICKET: _torch_file}  # by what the engine runs


def pick_engine(model_path: Path, engine: str | None) -> str:
    if model_path.is_dir():
        read_manifest(model_path)  # an export folder with its deployment, else ModelFileError
        folder = [running(runs, PREDICT) for runs in (DEPLOYMENT, FULL_GRAPH)]  # default first
        if engine is not None and engine not in folder:
            raise UserError(f"engine '{engine}' cannot run an export folder; allowed: "
                            f"{', '.join(folder)}", key="--engine")
        return engine or folder[0]
    suffix = model_path.suffix.lower()
    if suffix not in (".onnx", ".pt", ".pth"):
        raise ModelFileError(f"unknown model file type '{suffix}'; allowed: .onnx (exported graph), "
                             ".pt (ticket or checkpoint)", file=str(model_path))
    if not model_path.is_file():
        raise ModelFileError("file not found", file=str(model_path))
    wanted = running(FULL_GRAPH if suffix == ".onnx" else TICKET, PREDICT)
    if engine is not None and engine != wanted:
        raise UserError(f"engine '{engine}' cannot run a {suffix} file; allowed: {wanted}",
                        key="--engine")
    return wanted


def predict_command(model_path: Path, images_path: Path, *, engine: str | None, out: Path,
                    score_threshold: float = 0.5) -> Path:
    """Predict every image, one at a time (read, predict, write, next); write annotated PNGs,
    detections.json and images.json into `out`; return the path of detections.json."""

    engine = pick_engine(model_path, engine)
    # every header checked (size cap, readable) before the model loads; pixels decoded one by one
    files = [check_image(f) for f in collect_images(images_path)]
    predictor, info = load_predictor(model_path, engine, score_threshold)
    try:
        results, images = _predict_all(predictor, info, files, out, score_threshold)
    except DeepSparseFailed as err:
        raise UserError(f"DeepSparse failed: {err}", key="--engine") from err
    finally:
        close_predictor(predictor)
    target = out / "detections.json"
    write_json(target, results, indent=None)
    write_json(out / IMAGES_JSON, {"images": images})
    print(f"{len(files)} image(s), {len(results)} detection(s) >= {score_threshold}: {target} "
          f"(image ids -> file names: {out / IMAGES_JSON})")
    return target


IMAGES_JSON = "images.json"


def _predict_all(predictor: Predictor, info: LabelInfo, files: list[ImageFile], out: Path,
                 score_threshold: float) -> tuple[list[dict], list[dict]]:
    """COCO results of every image and the COCO-style `images` records (id, file_name, width,
    height as predicted, i.e. upright, and `drawn`, the annotated PNG's name)."""
    ids = assign_image_ids([f.path for f in files], info.image_ids)
    results: list[dict] = []
    images: list[dict] = []
    used: set[str] = {IMAGES_JSON}
    for file, image_id in zip(files, ids):
        with read_pil(file.path) as picture:
            original = (picture.height, picture.width)
            small = shrunk(picture)
            if small is not None:
                picture.close()  # only its shrunk copy is used from here on
            found, drawn = _predict_one(predictor, info, small or picture, original, image_id,
                                        score_threshold)
            name = _unique_name(file.path, used)
            images.append({"id": image_id, "file_name": file.path.name, "width": original[1],
                           "height": original[0], "drawn": name,
                           "drawn_scale": drawn.width / original[1]})
            write_bytes(out / name, png_bytes(drawn))  # `drawn` may be `picture` itself
            del drawn
        results += [{**r, "file_name": file.path.name} for r in found]  # extra keys: loadRes keeps them
        log.info("%s: %d detections -> %s", file.path.name, len(found), out / name)
    return results, images


def _predict_one(predictor: Predictor, info: LabelInfo, work: Any, original: tuple[int, int],
                 image_id: int, score_threshold: float) -> tuple[list[dict], Any]:
    """COCO results of one picture (at its `original` size) and its drawing (at `work`'s size).
    A huge picture comes as its shrunk copy: its masks are brought back to the original size one
    at a time (compress.stages.upscale), and it is drawn at the shrunk size."""
    outputs = predictor(to_tensor(work))
    mapping = info.label_to_cat_id or _identity(outputs["labels"])
    if (work.height, work.width) == original:
        results = outputs_to_coco_results(image_id, outputs, mapping, info.task)
    else:
        results = upscaled_results(outputs, (work.height, work.width), original, image_id,
                                   mapping, info.task)
    return results, draw_detections(to_uint8_rgb(work), outputs, score_threshold=score_threshold,
                                    class_names=info.class_names or None, in_place=True)


def _identity(labels: torch.Tensor) -> dict[int, int]:
    return {int(v): int(v) for v in labels.reshape(-1).tolist()}


def _unique_name(file: Path, used: set[str]) -> str:
    name, index = f"{file.stem}.png", 1
    while name in used or name == "detections.json":
        name, index = f"{file.stem}_{index}.png", index + 1
    used.add(name)
    return name
