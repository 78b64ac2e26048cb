"""Write the DeepSparse deployment of an exported R-CNN: part files + `manifest.json`, verified.

Each part of `partition.partition` becomes `NN_<name>.onnx`. Heavy parts (backbone + FPN + RPN
head convs, box head, mask / keypoint head) are marked `deepsparse` with the shapes they are
compiled at: the backbone at the canvas's feature shapes, the box head at the RPN's post-NMS
proposal count (RoIs zero-padded up to it), the mask / keypoint head in a few buckets up to the
detections per image. Mask R-CNN's mask pasting runs in torch (`runtime: torch`, see
`compress.evaluate.runtimes.pipeline`). The manifest records, per part: file, runtime, inputs, outputs,
compiled shapes, the padding rule and its sha256 (checked on every load: a part changed or cut
short since the export is refused). Parts are written atomically and the manifest last, so a
killed export leaves no manifest for a resume to trust. torchvision's level merge in `MultiScaleRoIAlign` is first
rewritten without scatters (`compress.export.deploy.roi_merge`), and each RoI pool (its RoiAligns and
the merge) becomes a `runtime: torch` part (`op: multiscale_roi_align`, the RoiAlign attributes
per level in `params`), checked against its own ONNX file on ONNX Runtime. Parity: the partition, every part on ONNX Runtime (the
pasting in torch), against the full graph on ONNX Runtime on the same canvas images
(detections, boxes, masks, keypoints).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from compress.core.atomic import write_bytes, write_json
from compress.core.deploy_manifest import MANIFEST, Canvas, Manifest, Part
from compress.evaluate.runtimes.parity import summarize
from compress.evaluate.runtimes.pipeline import TORCH_OPS, DeployedDetector, to_canvas
from compress.evaluate.runtimes.ort import ort_session
from compress.export.deploy.partition import MERGE, POOL_GROUPS, PartitionError, part_model, partition
from compress.export.deploy.partition import Part as Cut
from compress.export.deploy.deconv import rewrite_deconvs
from compress.export.deploy.roi_merge import rewrite_roi_merges

log = logging.getLogger(__name__)

HEAD_BUCKETS = (8, 32)
POOL_TOLERANCE = 1e-3  # torch RoI pooling vs its ONNX part on ONNX Runtime, max |diff|
PADDING_RULE = ("zero-pad axis 0 (RoIs) to the smallest compiled count that holds them; "
                "outputs cut back to the count; a count of 0 skips the part")


def _border_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Element type and rank of every tensor, dimensions left free (the parts are reshaped)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        free = copy.deepcopy(info)
        tensor = free.type.tensor_type
        for index, dim in enumerate(tensor.shape.dim):
            dim.Clear()
            dim.dim_param = f"{info.name}_{index}"
        types[info.name] = free
    return types


def _write_parts(model: onnx.ModelProto, parts: list[Cut], out_dir: Path) -> list[Part]:
    types = _border_types(model)
    entries = []
    for index, part in enumerate(parts):
        name = f"{index:02d}_{part.name}.onnx"
        data = part_model(model, part, types).SerializeToString()
        write_bytes(out_dir / name, data)  # atomic: a killed export leaves no half part
        entry = Part(name=part.name, file=name, runtime=part.runtime, inputs=part.inputs,
                     outputs=part.outputs, sha256=hashlib.sha256(data).hexdigest(),
                     bytes=len(data))
        entries.append(dataclasses.replace(entry, **_pool_op(part))
                       if part.runtime == "torch" else entry)
    return entries


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {key: value.decode() if isinstance(value, bytes) else value
            for key, value in values.items()}


def _pool_op(part: Cut) -> dict[str, Any]:
    """A torch RoI-pooling part: its inputs in the op's order (features, RoIs, batch indices
    per level, then the RoI order) and each level's RoiAlign attributes."""
    merge = POOL_GROUPS[part.name] + MERGE
    producer = {out: node for node in part.nodes for out in node.output}
    concat = next(n for n in part.nodes if n.name == f"{merge}Concat")
    gather = next(n for n in part.nodes if n.name == f"{merge}Gather")
    inputs, levels = [], []
    for pooled in concat.input:
        align = producer[pooled]
        attrs = _attributes(align)
        mode = attrs.get("coordinate_transformation_mode", "output_half_pixel")
        if attrs.get("mode", "avg") != "avg":
            raise PartitionError(f"{align.name}: RoiAlign mode {attrs['mode']} is not supported")
        inputs += list(align.input)
        levels.append({"spatial_scale": float(attrs.get("spatial_scale", 1.0)),
                       "output_height": int(attrs.get("output_height", 1)),
                       "output_width": int(attrs.get("output_width", 1)),
                       "sampling_ratio": int(attrs.get("sampling_ratio", 0)),
                       "aligned": mode == "half_pixel"})
    return {"op": "multiscale_roi_align", "inputs": [*inputs, gather.input[1]],
            "params": {"levels": levels}}


def _check_torch_parts(entries: list[Part], runs: list[dict[str, np.ndarray]],
                       folder: Path) -> list[Part]:
    """Each torch RoI-pooling part against its own ONNX file on ONNX Runtime (the reference), on
    every parity canvas's tensors: the parts with `reference_max_abs_diff`, `reference_rois`
    (RoIs compared) and `reference_status` ("ok", "failed", or "unchecked" when no canvas gave
    it a RoI: nothing compared is never "ok")."""
    return [_check_torch_part(e, runs, folder) if e.op == "multiscale_roi_align" else e
            for e in entries]


def _check_torch_part(entry: Part, runs: list[dict[str, np.ndarray]], folder: Path) -> Part:
    session = ort_session(folder / entry.file, threads=1, user_file=False)
    names = [i.name for i in session.get_inputs()]
    worst, rois, same = 0.0, 0, True
    for tensors in runs:
        ours = TORCH_OPS[entry.op](*[tensors[n] for n in entry.inputs], **entry.params)[0]
        theirs = session.run(None, {n: tensors[n] for n in names})[0]
        same = same and ours.shape == theirs.shape
        if same and ours.size:
            worst, rois = max(worst, float(np.abs(ours - theirs).max())), rois + len(ours)
    return dataclasses.replace(entry, reference_max_abs_diff=worst, reference_rois=rois,
                               reference_status=("failed" if not same or worst > POOL_TOLERANCE
                                                 else "ok" if rois else "unchecked"))


def _paste_in_torch(entries: list[Part], outputs: Sequence[str]) -> list[Part]:
    """Mask R-CNN: the last part (sigmoid, class gather and the ONNX Loop that pastes masks one by
    one) runs as torchvision's own `paste_masks` instead; its file stays as the reference. Any
    other shape of graph is left as it is."""
    heads = [e for e in entries if e.name == "mask_head"]
    last = entries[-1]
    if (heads and len(heads[0].outputs) == 1 and last.runtime == "onnxruntime"
            and last.outputs == ["masks"] and {"boxes", "labels"} <= set(outputs)):
        last = dataclasses.replace(last, name="paste_masks", runtime="torch", op="paste_masks",
                                   inputs=[heads[0].outputs[0], "labels", "boxes"])
    return [*entries[:-1], last]


def _compile_plan(entries: list[Part], tensors: dict[str, np.ndarray],
                  folder: Path, roi_count: int, max_detections: int) -> list[Part]:
    """The parts with each DeepSparse part's compiled shapes (buckets) and padding rule."""
    return [_compiled(e, tensors, folder, roi_count, max_detections)
            if e.runtime == "deepsparse" else e for e in entries]


def _compiled(entry: Part, tensors: dict[str, np.ndarray], folder: Path, roi_count: int,
              max_detections: int) -> Part:
    shapes = [list(tensors[name].shape) for name in entry.inputs]
    if entry.name == "backbone":
        return dataclasses.replace(entry, padding=None, compiled=[
            {"inputs": shapes, "outputs": [list(tensors[n].shape) for n in entry.outputs]}])
    top = roi_count if entry.name == "box_head" else max_detections
    buckets = sorted({min(b, top) for b in HEAD_BUCKETS} | {top}) if top != roi_count else [top]
    session = ort_session(folder / entry.file, threads=1, user_file=False)
    compiled = []
    for rows in buckets:
        feeds = {name: np.zeros([rows, *shape[1:]], dtype=np.float32)
                 for name, shape in zip(entry.inputs, shapes)}
        outputs = session.run(entry.outputs, feeds)
        compiled.append({"inputs": [list(f.shape) for f in feeds.values()],
                         "outputs": [list(o.shape) for o in outputs]})
    return dataclasses.replace(entry, padding={"axis": 0, "rule": PADDING_RULE}, compiled=compiled)


def build_deployment(full_onnx: str | os.PathLike, out_dir: str | os.PathLike, *,
                     canvas_size: int, roi_count: int, max_detections: int,
                     images: Sequence[Any],
                     judge: Callable[[list], dict[str, Any]] | None = None) -> Manifest:
    """Partition `full_onnx` into `out_dir` and verify it on `images` (3xHxW tensors in [0, 1]).

    `judge` decides the partition's parity with the full graph (default `summarize` within
    1e-2 px; a QDQ graph: `summarize_int8`, since ONNX Runtime fuses Q/DQ pairs by the graph's
    shape and a cut changes which it fuses).

    Returns the `Manifest` written; `status` is "ok", "failed" (parity) or "unsupported" (no
    partition).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # until the new one is written, nothing to trust
    model = onnx.load(str(full_onnx))
    rewrite_roi_merges(model)
    rewrite_deconvs(model)
    base = Manifest(source=Path(full_onnx).name, input=model.graph.input[0].name,
                    outputs=[o.name for o in model.graph.output], status="draft",
                    canvas=Canvas(height=canvas_size, width=canvas_size, pad_value=0.0,
                                  placement="resized with aspect kept (bilinear), top-left"))
    try:
        entries = _write_parts(model, partition(model), out_dir)
    except PartitionError as err:
        manifest = base.replace(status="unsupported", reason=str(err))
        write_json(out_dir / MANIFEST, manifest.to_json())
        return manifest
    entries = _paste_in_torch(entries, base.outputs)
    write_json(out_dir / MANIFEST, base.replace(parts=entries).to_json())
    canvases = [to_canvas(image, canvas_size, canvas_size)[0] for image in images]
    with DeployedDetector(out_dir, engine="onnxruntime") as reference:
        runs = [reference.run_canvas(canvas, keep_all=True) for canvas in canvases]
    entries = _compile_plan(entries, runs[0], out_dir, roi_count, max_detections)
    entries = _check_torch_parts(entries, runs, out_dir)
    manifest = base.replace(status="ok", parts=entries)
    write_json(out_dir / MANIFEST, manifest.to_json())
    parity = verify_deployment(full_onnx, out_dir, canvases, judge)
    pools = [e for e in entries if e.reference_status == "failed"]
    if pools and parity["status"] == "ok":
        parity.update(status="failed", reason=f"{pools[0].name}: torch RoI pooling differs "
                      f"from its ONNX part by {pools[0].reference_max_abs_diff:.3g}")
    status = parity["status"] if parity["status"] in ("ok", "unchecked") else "failed"
    # unchecked: an INT8 judge compared nothing
    manifest = manifest.replace(status=status, parity=parity)
    write_json(out_dir / MANIFEST, manifest.to_json())
    log.info("deployment %s: %d parts, parity %s", out_dir, len(entries), parity["status"])
    return manifest.replace(folder=out_dir)


def deploy_exported(model: Any, full_onnx: str | os.PathLike, out_dir: str | os.PathLike, *,
                    canvas_size: int, images: Sequence[Any],
                    judge: Callable[[list], dict[str, Any]] | None = None) -> Manifest:
    """`build_deployment` of a torchvision R-CNN's exported graph: the box head compiled at the
    model's post-NMS proposal count, the mask / keypoint head up to its detections per image."""
    return build_deployment(full_onnx, out_dir, canvas_size=canvas_size,
                            roi_count=int(model.rpn._post_nms_top_n["testing"]),
                            max_detections=int(model.roi_heads.detections_per_img),
                            images=images, judge=judge)


def verify_deployment(full_onnx: str | os.PathLike, folder: Path,
                      canvases: Sequence[np.ndarray],
                      judge: Callable[[list], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The partition (all parts on ONNX Runtime) against the full graph on the same canvases;
    `judge` decides (default `summarize` within 1e-2 px; an INT8 conversion: `summarize_int8`)."""
    session = ort_session(full_onnx, spinning=False)
    names = [o.name for o in session.get_outputs()]
    pairs = []
    with DeployedDetector(folder, engine="onnxruntime") as pipeline:
        for canvas in canvases:
            full = dict(zip(names, session.run(None, {session.get_inputs()[0].name: canvas})))
            pairs.append((full, pipeline.run_canvas(canvas)))
    return judge(pairs) if judge is not None else summarize(pairs, box_tolerance_px=1e-2)

