"""The partitioned deployment on ONNX Runtime: cut by scope, manifest, parity with the full graph."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from compress.core.errors import ModelFileError
from compress.stages.evaluate import deployment_parity
from compress.evaluate.runtimes.ort import ort_session
from compress.evaluate.runtimes.parity import summarize
from compress.evaluate.runtimes.pipeline import DeployedDetector, from_canvas, read_manifest, to_canvas
from compress.export.deploy.build import build_deployment
from compress.export.deploy.partition import HEAVY_GROUPS, PartitionError, partition
from tests.support.deployments import images, tiny_deployment

HEAVY = {"maskrcnn": ["backbone", "box_head", "mask_head"], "fasterrcnn": ["backbone", "box_head"],
         "keypointrcnn": ["backbone", "box_head", "keypoint_head"]}


@pytest.fixture(scope="module", params=sorted(HEAVY))
def deployed(request, tmp_path_factory):
    return (request.param, *tiny_deployment(request.param, tmp_path_factory.mktemp(request.param)))


def test_partition_matches_full_graph(deployed):
    arch, _, manifest = deployed
    assert manifest.status == "ok", manifest.parity
    parity = manifest.parity
    assert parity["detections_compared"] > 0 and parity["images"] == 3
    assert parity["box_max_abs_diff_px"] <= 1e-2 and parity["mask_pixels_flipped"] == 0
    heavy = [p.name for p in manifest.parts if p.runtime == "deepsparse"]
    assert heavy == HEAVY[arch]


def test_manifest_describes_every_part(deployed):
    _, folder, manifest = deployed
    on_disk = json.loads((folder / "deploy" / "manifest.json").read_text())
    assert on_disk["canvas"] == {"height": 64, "width": 64, "pad_value": 0.0,
                                 "placement": on_disk["canvas"]["placement"]}
    for part in on_disk["parts"]:
        assert (folder / "deploy" / part["file"]).is_file()
        assert part["inputs"] and part["outputs"]
        assert part["runtime"] in ("onnxruntime", "deepsparse", "torch")
        if part["runtime"] == "deepsparse":
            model = onnx.load(str(folder / "deploy" / part["file"]))
            scopes = HEAVY_GROUPS[part["name"]]
            assert all(n.name.startswith(scopes) or n.op_type in ("Constant", "Identity")
                       for n in model.graph.node)
            assert part["compiled"] and all(c["inputs"] and c["outputs"] for c in part["compiled"])
            assert (part["padding"] is None) == (part["name"] == "backbone")


def test_mask_pasting_runs_in_torch_and_matches_the_graph(deployed):
    """Mask R-CNN's last part (the graph's ONNX Loop pasting masks) runs as torchvision's paste;
    its mask probabilities equal the full graph's on ONNX Runtime, pixel by pixel."""
    arch, folder, manifest = deployed
    last = manifest.parts[-1]
    if arch != "maskrcnn":
        assert all(part.op == "multiscale_roi_align" for part in manifest.parts
                   if part.runtime == "torch")
        return
    assert last.runtime == "torch" and last.op == "paste_masks"
    assert (folder / "deploy" / last.file).is_file()  # the ONNX reference stays beside it
    full = ort_session(folder / "model.onnx")
    names = [o.name for o in full.get_outputs()]
    compared = 0
    with DeployedDetector(folder, engine="onnxruntime") as detector:
        for image in images():
            canvas = to_canvas(image, 64, 64)[0]
            ref = dict(zip(names, full.run(None, {full.get_inputs()[0].name: canvas})))
            got = detector.run_canvas(canvas)
            assert got["masks"].shape == ref["masks"].shape
            compared += len(ref["masks"])
            if len(ref["masks"]):
                assert np.abs(got["masks"] - ref["masks"]).max() < 1e-5
    assert compared > 0


def test_paste_into_image_equals_torchvision_paste():
    """Bit for bit, on boxes as the detector gives them (clipped to the image), at the edges, and
    degenerate ones."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image
    from torchvision.ops import clip_boxes_to_image

    from compress.evaluate.runtimes.pipeline import paste_into_image

    generator = torch.Generator().manual_seed(3)
    for height, width in ((96, 128), (128, 64)):
        corner = torch.rand(60, 2, generator=generator) * 140 - 20
        boxes = torch.cat([corner, corner + torch.rand(60, 2, generator=generator) * 90], dim=1)
        boxes = clip_boxes_to_image(boxes, (height, width))
        boxes[0] = torch.tensor([10.0, 10.0, 10.0, 10.0])  # a point
        boxes[1] = torch.tensor([0.0, 0.0, width, height])  # the whole image
        boxes[2] = torch.tensor([width - 1.0, height - 1.0, width, height])  # the far corner
        masks = torch.rand(60, 1, 28, 28, generator=generator)
        expected = paste_masks_in_image(masks, boxes, (height, width))
        assert torch.equal(paste_into_image(masks, boxes, height, width), expected)
    assert paste_into_image(masks[:0], boxes[:0], 32, 32).shape == (0, 1, 32, 32)


def test_runner_maps_back_to_the_image(deployed):
    """A 40x80 image goes onto the 64x64 canvas at scale 0.8; boxes come back in image pixels."""
    _, folder, _ = deployed
    image = torch.rand(3, 40, 80, generator=torch.Generator().manual_seed(5))
    with DeployedDetector(folder, engine="onnxruntime") as detector:
        out = detector(image)
        canvas, place = to_canvas(image, 64, 64)
        on_canvas = detector.run_canvas(canvas)
    assert place.scale == pytest.approx(0.8) and (place.height, place.width) == (32, 64)
    np.testing.assert_allclose(out["boxes"].numpy(), np.clip(on_canvas["boxes"] / 0.8, 0, [80, 40, 80, 40]),
                               rtol=1e-6)
    if "masks" in out:
        assert tuple(out["masks"].shape[-2:]) == (40, 80)
    assert set(detector.timings_ms) >= {p.name for p in detector.parts}


def test_padding_buckets_and_empty_counts(deployed):
    _, folder, manifest = deployed
    with DeployedDetector(folder, engine="onnxruntime") as detector:
        head = next(p for p in manifest.parts if p.name == "box_head")
        empty = detector._run_part(head, [np.zeros((0, 16, 7, 7), np.float32)])
        assert [o.shape[0] for o in empty] == [0, 0]


def test_deployment_parity_fails_on_a_shifted_box_and_on_nothing(deployed):
    _, folder, _ = deployed
    loader = [(images(2), [{}, {}])]
    with DeployedDetector(folder, engine="onnxruntime") as reference:
        def shifted(image):
            out = reference(image)
            out["boxes"] = out["boxes"] + 1.0
            return out
        assert deployment_parity(reference, folder, loader)["status"] == "ok"
        bad = deployment_parity(shifted, folder, loader)
        assert bad["status"] == "failed" and "boxes differ" in bad["reason"]
        nothing = deployment_parity(reference, folder, [])
        assert nothing["status"] == "failed" and "compared nothing" in nothing["reason"]


def test_summarize_needs_detections():
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0), "scores": np.zeros(0)}
    assert summarize([(empty, empty)])["status"] == "failed"
    assert summarize([(empty, empty)], require_detections=False)["status"] == "ok"
    one = {"boxes": np.ones((1, 4)), "labels": np.ones(1), "scores": np.ones(1)}
    assert summarize([(one, empty)])["reason"].startswith("image 0: 0 detections instead of 1")


def test_heavy_node_reading_a_later_part_is_unsupported(tmp_path):
    """backbone -> light -> backbone cannot run in order: no deployment, a clear status."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/backbone/Relu"),
             helper.make_node("Neg", ["a"], ["b"], name="/rpn/Neg"),
             helper.make_node("Relu", ["b"], ["c"], name="/backbone/Relu_1")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    with pytest.raises(PartitionError):
        partition(model)
    onnx.save(model, str(tmp_path / "model.onnx"))
    manifest = build_deployment(tmp_path / "model.onnx", tmp_path / "deploy", canvas_size=64,
                                roi_count=10, max_detections=5, images=images(1))
    assert manifest.status == "unsupported"
    with pytest.raises(ModelFileError, match="no deployment"):
        read_manifest(tmp_path)


def test_from_canvas_clips_boxes():
    _, place = to_canvas(torch.zeros(3, 20, 10), 40, 40)
    out = from_canvas({"boxes": np.array([[0, 0, 30, 45]], np.float32)}, place)
    assert out["boxes"].tolist() == [[0, 0, 10, 20]]
