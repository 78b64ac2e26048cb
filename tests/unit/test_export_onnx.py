"""ONNX export of pruned tiny R-CNNs: zeros kept exactly, ORT matches torch, bad input rejected."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from support.onnx_models import SIZE, pruned_tiny

from compress.core.errors import ModelFileError, UserError
from compress.export.onnx_export import export_backbone, export_full, load_onnx
from compress.export.verify import (
    VerificationError,
    map_initializers,
    scope_to_module,
    verify_parity,
    verify_zeros,
    write_verify,
)


def _images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(3, SIZE, SIZE + 16, generator=gen),
            torch.rand(3, SIZE + 8, SIZE, generator=gen)]


@pytest.fixture(scope="module", params=["fasterrcnn", "maskrcnn", "keypointrcnn"])
def exported(request, tmp_path_factory):
    torch.set_num_threads(1)
    model, mask = pruned_tiny(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    full = export_full(model, folder / "model.onnx", image_size=SIZE)
    backbone = export_backbone(model, folder / "backbone.onnx", image_size=SIZE)
    results = {
        "full_zeros": verify_zeros(full, model, mask),
        "full_parity": verify_parity(full, model, _images(), kind="full"),
        "backbone_zeros": verify_zeros(backbone, model, mask),
        "backbone_parity": verify_parity(backbone, model, _images(), kind="backbone"),
    }
    return {"arch": request.param, "model": model, "mask": mask, "folder": folder,
            "full": full, "backbone": backbone, "results": results}


def test_zeros_preserved_on_both_graphs(exported):
    full, backbone = exported["results"]["full_zeros"], exported["results"]["backbone_zeros"]
    assert full["passed"] and backbone["passed"]
    assert full["checked"] == len(exported["mask"]) and not full["absent_from_graph"]
    body = [n for n in exported["mask"] if n.startswith("backbone.")]
    assert backbone["checked"] == len(body)
    for name, row in full["tensors"].items():
        assert row["onnx_zeros"] == row["mask_zeros"] == int((~exported["mask"][name]).sum())
    # BatchNorm was folded: body convs are renamed and rescaled, yet found and exact.
    stem = full["tensors"]["backbone.body.conv1.weight"]
    assert stem["initializer"] != "backbone.body.conv1.weight"
    inits = load_onnx(exported["full"]).graph.initializer
    onnx_w = numpy_helper.to_array(next(i for i in inits if i.name == stem["initializer"]))
    torch_w = exported["model"].state_dict()["backbone.body.conv1.weight"].numpy()
    assert not np.allclose(onnx_w, torch_w)
    assert np.array_equal(onnx_w == 0, ~exported["mask"]["backbone.body.conv1.weight"].numpy())


def test_exported_zeros_are_positive(exported):
    for path in (exported["full"], exported["backbone"]):
        for init in onnx.load(str(path)).graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT:
                array = numpy_helper.to_array(init)
                assert not np.signbit(array[array == 0]).any()


def test_full_graph_parity(exported):
    parity = exported["results"]["full_parity"]
    assert parity["passed"], parity
    assert parity["matched"] == parity["torch_detections"] == parity["onnx_detections"] > 0
    assert parity["max_box_diff"] <= 1e-4 and parity["label_agreement"] == 1.0
    if exported["arch"] == "maskrcnn":
        assert parity["min_mask_iou"] >= 0.99
    if exported["arch"] == "keypointrcnn":
        assert parity["max_keypoint_dist_px"] <= 1e-3
    names = [o.name for o in load_onnx(exported["full"]).graph.output]
    assert names[:3] == ["boxes", "labels", "scores"]


def test_backbone_parity_and_dynamic_batch(exported):
    parity = exported["results"]["backbone_parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4
    assert set(parity["outputs"]) == {"fpn_0", "fpn_1", "fpn_pool"}
    session = ort.InferenceSession(str(exported["backbone"]), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"images": np.random.rand(3, 3, SIZE, SIZE).astype(np.float32)})
    assert all(o.shape[0] == 3 for o in outs)


def test_write_verify_records_pass(exported):
    path = write_verify(exported["folder"] / "export", exported["results"])
    data = json.loads(path.read_text())
    assert data["passed"] and set(data["checks"]) == set(exported["results"])


def test_corrupted_initializer_is_caught(exported, tmp_path):
    if exported["arch"] != "maskrcnn":
        pytest.skip("one architecture is enough")
    model, mask = exported["model"], exported["mask"]
    proto = onnx.load(str(exported["full"]))
    name = "backbone.body.layer1.0.conv1.weight"
    init_name = map_initializers(proto, list(mask))[name]
    init = next(i for i in proto.graph.initializer if i.name == init_name)
    array = numpy_helper.to_array(init).copy()
    bad = tuple(int(v) for v in np.argwhere(~mask[name].numpy())[7])
    array[bad] = 0.25
    init.CopyFrom(numpy_helper.from_array(array, init_name))
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    result = verify_zeros(tmp_path / "bad.onnx", model, mask)
    assert not result["passed"] and result["failed"] == [name]
    row = result["tensors"][name]
    assert row["masked_but_nonzero"] == 1 and row["first_bad_positions"] == [list(bad)]
    with pytest.raises(VerificationError):
        write_verify(tmp_path, {"full_zeros": result})
    assert json.loads((tmp_path / "verify.json").read_text())["passed"] is False


def test_scope_to_module():
    prefixes = {"rpn", "rpn.head", "rpn.head.conv", "rpn.head.conv.0", "rpn.head.conv.0.0",
                "backbone", "backbone.body", "backbone.body.layer1", "backbone.body.layer1.0",
                "backbone.body.layer1.0.conv1"}
    assert scope_to_module("/rpn/head/conv/conv.0/conv.0.0_1/Conv", prefixes) == "rpn.head.conv.0.0"
    assert scope_to_module("/backbone/body/layer1/layer1.0/conv1/Conv", prefixes) == \
        "backbone.body.layer1.0.conv1"
    assert scope_to_module("/transform/Concat", prefixes) is None


def _one_line_error(exc_info) -> None:
    assert isinstance(exc_info.value, UserError)
    assert "\n" not in str(exc_info.value)


@pytest.mark.parametrize("opset", [5, 30])
def test_unsupported_opset_writes_nothing(tmp_path, opset):
    model = torch.nn.Module()
    for export in (export_full, export_backbone):
        with pytest.raises(UserError) as info:
            export(model, tmp_path / "out.onnx", image_size=SIZE, opset=opset)
        _one_line_error(info)
        assert "11..17" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_onnx_files(tmp_path, exported):
    if exported["arch"] != "fasterrcnn":
        pytest.skip("one architecture is enough")
    (tmp_path / "text.onnx").write_text("this is not a model\n")
    data = exported["backbone"].read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    for name in ("text.onnx", "cut.onnx", "missing.onnx"):
        with pytest.raises(ModelFileError) as info:
            verify_zeros(tmp_path / name, exported["model"], exported["mask"])
        _one_line_error(info)
        assert name in str(info.value)
