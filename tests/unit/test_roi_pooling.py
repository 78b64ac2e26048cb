"""RoI pooling in the deployment: the scatter-free level merge (ONNX rewrite) and the torch
RoIAlign, each against its reference (the original graph on ONNX Runtime, torchvision's kernel,
ONNX Runtime's RoiAlign)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torchvision.ops import roi_align as torchvision_roi_align

from compress.evaluate.runtimes import pipeline
from compress.export.deploy import build
from compress.evaluate.runtimes.roi_align import multiscale_roi_align, roi_align
from compress.export.deploy.roi_merge import rewrite_roi_merges
from tests.support.deployments import images, tiny_deployment

POOLS = {"fasterrcnn": ["box_roi_pool"], "maskrcnn": ["box_roi_pool", "mask_roi_pool"],
         "keypointrcnn": ["box_roi_pool", "keypoint_roi_pool"]}


def _boxes(count: int, size: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * (size * 1.2) - size * 0.1
    boxes = torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * size / 2], 1)
    boxes[:5] = torch.tensor([[0, 0, 0, 0], [size - 1, size - 1, size, size], [-9, -9, -4, -4],
                              [10, 10, 10.5, size / 2], [0, 0, size, size]])
    return boxes


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 1, 0])
def test_roi_align_equals_torchvision(aligned, sampling_ratio):
    """Edge boxes included (a point, the far corner, outside the image, thin, the whole image),
    two images in the batch."""
    features = torch.randn(2, 8, 24, 20, generator=torch.Generator().manual_seed(1))
    rois = _boxes(40, 96.0, 2)
    batch = torch.arange(40) % 2
    level = {"spatial_scale": 0.25, "output_height": 7, "output_width": 5,
             "sampling_ratio": sampling_ratio, "aligned": aligned}
    expected = torchvision_roi_align(features, torch.cat([batch[:, None].float(), rois], 1),
                                     (7, 5), 0.25, sampling_ratio, aligned)
    got = roi_align(features, rois, batch, level)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5


def _onnx_roi_align(features: np.ndarray, rois: np.ndarray, level: dict) -> np.ndarray:
    node = helper.make_node("RoiAlign", ["x", "r", "b"], ["y"], mode="avg",
                            output_height=level["output_height"], output_width=level["output_width"],
                            sampling_ratio=level["sampling_ratio"], spatial_scale=level["spatial_scale"],
                            coordinate_transformation_mode="output_half_pixel")
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, list(features.shape)),
        helper.make_tensor_value_info("r", TensorProto.FLOAT, [None, 4]),
        helper.make_tensor_value_info("b", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": features, "r": rois, "b": np.zeros(len(rois), np.int64)})[0]


def test_multiscale_roi_align_equals_onnx_runtime_per_level_and_in_order():
    """Two levels, RoIs split between them in a shuffled order: the op's rows, put back in RoI
    order, equal ONNX Runtime's RoiAlign on each level's RoIs."""
    generator = torch.Generator().manual_seed(4)
    feats = [torch.randn(1, 16, 32, 32, generator=generator), torch.randn(1, 16, 16, 16, generator=generator)]
    rois = _boxes(30, 128.0, 5)
    level_of = torch.randint(0, 2, (30,), generator=generator)
    levels = [{"spatial_scale": 0.25 / 2 ** i, "output_height": 7, "output_width": 7,
               "sampling_ratio": 2} for i in range(2)]
    members = [torch.where(level_of == i)[0] for i in range(2)]
    order = torch.empty(30, dtype=torch.int64)
    order[torch.cat(members)] = torch.arange(30)
    inputs = []
    for i in range(2):
        inputs += [feats[i].numpy(), rois[members[i]].numpy(), np.zeros(len(members[i]), np.int64)]
    out = multiscale_roi_align(*inputs, order.numpy(), levels=levels)[0]
    for i in range(2):
        expected = _onnx_roi_align(feats[i].numpy(), rois[members[i]].numpy(), levels[i])
        assert np.abs(out[members[i].numpy()] - expected).max() < 1e-5


@pytest.fixture(scope="module", params=sorted(POOLS))
def deployed(request, tmp_path_factory):
    """(arch, export folder, manifest): one tiny deployment per detector for this module."""
    return (request.param, *tiny_deployment(request.param, tmp_path_factory.mktemp(request.param)))


def test_rewritten_merge_equals_the_original_graph(deployed):
    """No ScatterElements over pooled features left; the outputs are those of the original graph
    on ONNX Runtime, value for value."""
    arch, folder, _ = deployed
    original = onnx.load(str(folder / "model.onnx"))
    rewritten = onnx.load(str(folder / "model.onnx"))
    scopes = rewrite_roi_merges(rewritten)
    assert sorted(s.split("/")[2] for s in scopes) == sorted(POOLS[arch])
    assert not [n for n in rewritten.graph.node if n.op_type == "ScatterElements"
                and "lth_order" not in n.name and "_roi_pool/" in n.name]
    a, b = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            for m in (original, rewritten))
    compared = 0
    for image in images():
        feed = {a.get_inputs()[0].name: image.numpy()}
        for x, y in zip(a.run(None, feed), b.run(None, feed)):
            assert x.shape == y.shape and np.array_equal(x, y)
            compared += x.size
    assert compared > 0


def test_roi_pools_run_in_torch_checked_against_their_onnx_part(deployed):
    arch, _, manifest = deployed
    pools = [p for p in manifest.parts if p.op == "multiscale_roi_align"]
    assert [p.name for p in pools] == POOLS[arch]
    for part in pools:
        assert part.runtime == "torch" and part.reference_status == "ok"
        assert part.reference_rois > 0  # compared on real RoIs, not on nothing
        assert part.reference_max_abs_diff < 1e-4
        assert len(part.inputs) == 3 * len(part.params["levels"]) + 1


def test_a_wrong_torch_pool_fails_the_deployment(tmp_path, monkeypatch):
    """The torch RoI pooling is checked, not trusted: shifted by 0.5 it fails its reference
    check and the deployment's status."""
    real = pipeline.TORCH_OPS["multiscale_roi_align"]
    monkeypatch.setitem(pipeline.TORCH_OPS, "multiscale_roi_align",
                        lambda *a, **k: [real(*a, **k)[0] + 0.5])
    # the end-to-end comparison passing: only the pool's own check can fail the deployment
    monkeypatch.setattr(build, "verify_deployment", lambda *a, **k: {"status": "ok"})
    _, manifest = tiny_deployment("fasterrcnn", tmp_path)
    assert manifest.status == "failed" and "box_roi_pool" in manifest.parity["reason"]
    pool = next(p for p in manifest.parts if p.name == "box_roi_pool")
    assert pool.reference_status == "failed" and pool.reference_max_abs_diff >= 0.5
    assert pool.reference_rois > 0
