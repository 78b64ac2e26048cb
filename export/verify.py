"""Prove an exported ONNX graph is the ticket: zeros kept exactly, outputs equal to torch.

`verify_zeros` maps each pruned torch tensor to its ONNX initializer. Unfolded weights keep their
torch name; BatchNorm-folded conv weights get a new name (`onnx::Conv_123`) and a per-output-channel
scale, so they are found through the scope of the node that consumes them
(`/backbone/body/layer1/layer1.0/conv1/Conv` -> `backbone.body.layer1.0.conv1.weight`), and failing
that by shape plus values equal up to a per-channel scale. The mapping is one to one: a tensor
whose only match already belongs to another fails, naming both. The initializer must be zero
exactly where the mask is False (a graph that holds no pruned tensor has nothing to check and
passes, saying so). `verify_parity` runs ONNX Runtime (CPU) against torch and fails when no
detection was compared; `verify_full_parity` makes sure there is something to compare.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from compress.core.atomic import write_json
from compress.export.onnx_export import BackboneGraph, export_full, load_onnx

log = logging.getLogger(__name__)

BOX_TOL = 1e-4
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


class VerificationError(RuntimeError):
    """The exported graph lost zeros or does not match torch: the export must not be used."""


def _prefixes(names: list[str]) -> set[str]:
    return {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}


def scope_to_module(node_name: str, prefixes: set[str]) -> str | None:
    """`/rpn/head/conv/conv.0/conv.0.0_1/Conv` -> `rpn.head.conv.0.0` (None if not a module)."""
    parts: list[str] = []
    for seg in node_name.strip("/").split("/")[:-1]:
        for cand in (seg, re.sub(r"_\d+$", "", seg)):
            nested = parts and cand.startswith(parts[-1] + ".")
            joined = parts[:-1] + [cand] if nested else parts + [cand]
            if ".".join(joined) in prefixes:
                parts = joined
                break
        else:
            return None
    return ".".join(parts) or None


def map_initializers(model: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """Torch parameter name -> initializer name, by exact name or by the consuming node's scope.

    One to one: an initializer already given to one torch name is never given to another (a
    weight shared by two modules maps to the first; the second is left for `verify_zeros` to
    report)."""
    inits = {i.name for i in model.graph.initializer}
    identity = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}
    prefixes = _prefixes(names)
    found = {n: n for n in names if n in inits}
    taken = set(found.values())
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        module = scope_to_module(node.name, prefixes)
        weight = node.input[1]
        while weight in identity:
            weight = identity[weight]
        key = f"{module}.weight"
        if module and key in names and key not in found and weight in inits and weight not in taken:
            found[key] = weight
            taken.add(weight)
    return found


def _align(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    if array.shape == shape:
        return array
    if array.ndim == 2 and array.T.shape == shape:
        return array.T
    return None


def _scale_error(onnx_w: np.ndarray, torch_w: np.ndarray) -> float:
    """Relative error of onnx_w == torch_w * per-channel scale (best of axis 0 and axis 1)."""
    best = np.inf
    for axis in (0, 1)[: torch_w.ndim]:
        a = np.moveaxis(onnx_w, axis, 0).reshape(onnx_w.shape[axis], -1).astype(np.float64)
        t = np.moveaxis(torch_w, axis, 0).reshape(torch_w.shape[axis], -1).astype(np.float64)
        scale = (a * t).sum(1) / np.maximum((t * t).sum(1), 1e-300)
        err = np.abs(a - t * scale[:, None]).max(1) / np.maximum(np.abs(a).max(1), 1e-30)
        best = min(best, float(err.max()) if err.size else 0.0)
        if best < 1e-6:
            break
    return best


def _fallback(torch_w: np.ndarray, arrays: dict[str, np.ndarray],
              owner: dict[str, str]) -> tuple[str | None, str | None]:
    """The free initializer equal to `torch_w` up to a per-channel scale, else (None, why not)."""
    scored = sorted((_scale_error(_align(a, torch_w.shape), torch_w), name)
                    for name, a in arrays.items() if _align(a, torch_w.shape) is not None)
    matching = [name for error, name in scored if error < 1e-3]
    free = [name for name in matching if name not in owner]
    if free:
        return free[0], None
    if matching:
        return None, (f"its only matching initializer(s) {', '.join(matching[:3])} already belong "
                      f"to {', '.join(owner[m] for m in matching[:3])}")
    return None, "no initializer found"


def _check_tensor(onnx_w: np.ndarray, torch_w: np.ndarray, keep: np.ndarray) -> dict:
    zero = onnx_w == 0
    masked_nonzero = np.argwhere(~keep & ~zero)
    extra_zero = np.argwhere(keep & zero & (torch_w != 0))
    scale_error = _scale_error(onnx_w, torch_w)
    return {"numel": int(keep.size), "mask_zeros": int((~keep).sum()),
            "onnx_zeros": int(zero.sum()),
            "masked_but_nonzero": int(len(masked_nonzero)), "kept_but_zero": int(len(extra_zero)),
            "first_bad_positions": [list(map(int, p))
                                    for p in [*masked_nonzero[:5], *extra_zero[:5]]],
            "scale_error": scale_error,
            "passed": not len(masked_nonzero) and not len(extra_zero) and scale_error < 1e-3}


def verify_zeros(onnx_path: str | os.PathLike, model: torch.nn.Module,
                 mask: dict[str, torch.Tensor]) -> dict:
    """Check every pruned tensor's initializer is zero exactly where its mask is False."""
    proto = load_onnx(onnx_path)
    state = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT}
    mapping = map_initializers(proto, list(mask))
    owner = {init: name for name, init in mapping.items()}  # one torch tensor per initializer
    scopes = {n.name.strip("/").split("/")[0] for n in proto.graph.node} | {
        n.split(".")[0] for n in arrays}
    tensors, absent = {}, []
    for name, keep_t in mask.items():
        keep, torch_w = keep_t.cpu().numpy().astype(bool), state[name]
        init, why = mapping.get(name), None
        if init is None:
            init, why = _fallback(torch_w, arrays, owner)
        if init is None:
            if name.split(".")[0] not in scopes:
                absent.append(name)
                continue
            tensors[name] = {"initializer": None, "passed": False, "reason": why}
            continue
        owner[init] = name
        onnx_w = _align(arrays[init], keep.shape)
        if onnx_w is None:
            tensors[name] = {"initializer": init, "passed": False, "reason": "shape mismatch"}
            continue
        tensors[name] = {"initializer": init, **_check_tensor(onnx_w, torch_w, keep)}
    failed = [n for n, t in tensors.items() if not t["passed"]]
    log.info("verify_zeros %s: %d tensors, %d failed", onnx_path, len(tensors), len(failed))
    result = {"onnx": str(onnx_path), "checked": len(tensors), "absent_from_graph": absent,
              "failed": failed, "tensors": tensors, "passed": not failed and bool(tensors)}
    if not mask:  # e.g. the backbone graph of a ticket that pruned only the heads
        log.info("verify_zeros %s: no pruned tensor belongs to this graph; nothing to check",
                 onnx_path)
        result.update(passed=True, note="no pruned tensor belongs to this graph: nothing to check")
    return result


def _session(onnx_path: str | os.PathLike):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _match(ref_boxes: torch.Tensor, ort_boxes: torch.Tensor, min_iou: float = 0.9) -> list:
    """Greedy one-to-one matching in torch score order by IoU >= min_iou."""
    from torchvision.ops import box_iou

    if not len(ref_boxes) or not len(ort_boxes):
        return []
    iou = box_iou(ref_boxes, ort_boxes)
    pairs, used = [], set()
    for i in range(len(ref_boxes)):
        order = torch.argsort(iou[i], descending=True).tolist()
        j = next((j for j in order if j not in used), None)
        if j is not None and iou[i, j] >= min_iou:
            pairs.append((i, j))
            used.add(j)
    return pairs


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def _compare_image(model: torch.nn.Module, session, names: list[str], image: torch.Tensor) -> dict:
    with torch.no_grad():
        ref = model([image])[0]
    out = {k: torch.from_numpy(v) for k, v in
           zip(names, session.run(names, {"images": image.numpy()}))}
    pairs = _match(ref["boxes"], out["boxes"])
    i = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    j = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    res = {"torch_detections": len(ref["boxes"]), "onnx_detections": len(out["boxes"]),
           "matched": len(pairs), "max_box_diff": 0.0, "max_score_diff": 0.0, "labels_equal": 0}
    if pairs:
        res["max_box_diff"] = (ref["boxes"][i] - out["boxes"][j]).abs().max().item()
        res["max_score_diff"] = (ref["scores"][i] - out["scores"][j]).abs().max().item()
        res["labels_equal"] = int((ref["labels"][i] == out["labels"][j]).sum())
        if "masks" in ref:
            res["min_mask_iou"] = min(_mask_iou(ref["masks"][a], out["masks"][b]) for a, b in pairs)
        if "keypoints" in ref:
            dist = (ref["keypoints"][i, :, :2] - out["keypoints"][j, :, :2]).norm(dim=-1)
            res["max_keypoint_dist_px"] = dist.max().item()
    return res


def _summarise_full(per_image: list[dict]) -> dict:
    total = {k: sum(r[k] for r in per_image)
             for k in ("torch_detections", "onnx_detections", "matched", "labels_equal")}
    summary = {**total, "max_box_diff": max(r["max_box_diff"] for r in per_image),
               "max_score_diff": max(r["max_score_diff"] for r in per_image)}
    for key, pick in (("min_mask_iou", min), ("max_keypoint_dist_px", max)):
        values = [r[key] for r in per_image if key in r]
        if values:
            summary[key] = pick(values)
    summary["label_agreement"] = total["labels_equal"] / max(total["matched"], 1)
    most = max(total["torch_detections"], total["onnx_detections"])
    summary["passed"] = (total["matched"] > 0 and summary["max_box_diff"] <= BOX_TOL
                         and total["matched"] >= 0.9 * most
                         and total["labels_equal"] == total["matched"]
                         and summary.get("min_mask_iou", 1.0) >= 0.9
                         and summary.get("max_keypoint_dist_px", 0.0) <= 0.01)
    if total["matched"] == 0:
        summary["reason"] = ("no detection was compared (torch {torch_detections}, ONNX "
                             "{onnx_detections}, matched 0)".format(**total))
    return summary


def _compare_backbone(model: torch.nn.Module, session, images: list[torch.Tensor]) -> dict:
    graph = BackboneGraph(model).eval()
    height, width = session.get_inputs()[0].shape[2:]
    batch = torch.stack([torch.nn.functional.interpolate(im[None], size=(height, width),
                                                         mode="bilinear")[0] for im in images])
    with torch.no_grad():
        ref = graph(batch)
    names = [o.name for o in session.get_outputs()]
    outs = session.run(names, {"images": batch.numpy()})
    levels = {}
    for name, r, o in zip(names, ref, outs):
        diff = float(np.abs(r.numpy() - o).max())
        scale = float(np.abs(r.numpy()).max())
        levels[name] = {"shape": list(o.shape), "max_abs_diff": diff, "max_abs_value": scale,
                        "passed": diff <= BOX_TOL * max(1.0, scale)}
    return {"batch": len(images), "outputs": levels,
            "max_abs_diff": max(v["max_abs_diff"] for v in levels.values()),
            "passed": all(v["passed"] for v in levels.values())}


def verify_parity(onnx_path: str | os.PathLike, model: torch.nn.Module,
                  images: list[torch.Tensor], kind: str = "full") -> dict:
    """ONNX Runtime (CPU) vs torch on `images` (3xHxW in [0, 1]) for a full or backbone graph."""
    if kind not in ("full", "backbone"):
        raise ValueError(f"kind must be 'full' or 'backbone', got {kind!r}")
    load_onnx(onnx_path)
    model = model.eval()
    session = _session(onnx_path)
    if kind == "backbone":
        result = _compare_backbone(model, session, images)
    else:
        names = [o.name for o in session.get_outputs()]
        per_image = [_compare_image(model, session, names, im) for im in images]
        result = {**_summarise_full(per_image), "images": per_image}
    log.info("verify_parity %s (%s): passed=%s", onnx_path, kind, result["passed"])
    return {"onnx": str(onnx_path), "kind": kind, **result}


@contextlib.contextmanager
def score_threshold(model: torch.nn.Module, value: float):
    """The detector's box score threshold set to `value` for the block (torchvision RoIHeads)."""
    heads = model.roi_heads
    saved, heads.score_thresh = heads.score_thresh, value
    try:
        yield model
    finally:
        heads.score_thresh = saved


def verify_full_parity(onnx_path: str | os.PathLike, model: torch.nn.Module,
                       images: list[torch.Tensor], *, image_size: int, opset: int) -> dict:
    """Parity of the deployed full graph, with something to compare.

    A weak ticket may score nothing above its threshold on the parity images; then both sides
    agree on zero detections and nothing was compared. In that case the same model is exported
    again at score threshold 0 (the threshold is a constant of the graph; nothing else changes)
    and that graph is compared box by box; the deployed graph's own counts are kept beside.
    The check fails when no detection was compared either way.
    """
    deployed = verify_parity(onnx_path, model, images, kind="full")
    if deployed["torch_detections"] or deployed["onnx_detections"]:
        return {**deployed, "score_thresh": float(model.roi_heads.score_thresh)}
    log.info("parity: no detections at score threshold %s; comparing at threshold 0",
             model.roi_heads.score_thresh)
    with tempfile.TemporaryDirectory(prefix="parity_") as tmp, score_threshold(model, 0.0):
        probe = export_full(model, Path(tmp) / "parity.onnx", image_size=image_size, opset=opset)
        result = verify_parity(probe, model, images, kind="full")
    counts = {k: deployed[k] for k in ("torch_detections", "onnx_detections")}
    return {**result, "onnx": str(onnx_path), "score_thresh": 0.0, "deployed_counts": counts,
            "note": "no detections at the deployed score threshold on either side; compared the "
                    "same model exported at score threshold 0"}


def write_verify(out_dir: str | os.PathLike, results: dict[str, dict]) -> Path:
    """Write `verify.json` ({passed, checks}); raise VerificationError if any check failed."""
    failed = [name for name, res in results.items() if not res.get("passed", False)]
    path = Path(out_dir) / "verify.json"
    write_json(path, {"passed": not failed, "failed": failed, "checks": results})
    if failed:
        raise VerificationError(f"{path}: export verification failed for {', '.join(failed)}")
    return path
