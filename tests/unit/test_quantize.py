"""The quantization phase's pieces on a tiny Mask R-CNN: BatchNorm folding is exact and keeps
zeros, SparseML's QAT wraps what the deployment runs on DeepSparse, the mask holds through QAT,
the QDQ export keeps every zero (verify_zeros) and the integer parts store each pruned weight as
exactly its zero point (verify_int8_zeros); INT8 parity is judged on confident detections."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.core.errors import RecipeError
from compress.lottery.masks import MaskHolder
from compress.lottery.sparseml_adapter import sparseml_loggers
from compress.quantize.phase_conv import (Phasing, PhaseConvTranspose2d, phase_deconvs, phase_mask,
                                          phasing_of)
from compress.quantize.qat import (fold_batchnorms, freeze, prepare_qat, quantization_manager,
                                   quantization_recipe, quantized_layers, quantized_params)
from compress.recipe.load import load_recipe
from compress.evaluate.runtimes.parity import summarize_int8
from compress.export.compact import pack, unpack
from compress.export.deploy.build import _border_types
from compress.export.deploy.int8 import int8_weights, to_deepsparse_int8, unshare_weight_qdq, verify_int8_zeros
from compress.export.deploy.partition import part_model, partition
from compress.export.onnx_export import export_full
from compress.export.verify import verify_zeros
from support.recipes import ROOT, TINY_LOTTERY
from support.tiny_training import train_steps


def _tiny():
    from compress.run.loaded import build_for_run
    recipe = load_recipe(ROOT / "recipes" / "maskrcnn_lth.yaml", smoke=True, overrides=TINY_LOTTERY)
    torch.manual_seed(0)
    model = build_for_run(recipe, 3)
    for module in model.modules():  # trained-looking BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    gen = torch.Generator().manual_seed(1)
    mask = {n: torch.rand(p.shape, generator=gen) > 0.6 for n, p in model.named_parameters()
            if n.endswith("weight") and p.dim() in (2, 4) and ("predictor" not in n or "conv5_mask" in n)}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in mask:
                param.mul_(mask[name])
    return model.eval(), mask


def test_folding_batchnorm_is_exact_and_keeps_zeros():
    model, mask = _tiny()
    reference = copy.deepcopy(model)
    weight = model.backbone.body.conv1.weight
    assert fold_batchnorms(model) > 0
    assert model.backbone.body.conv1.weight is weight  # scaled in place: the Parameter stays
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = reference.backbone(image), model.backbone(image)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    keep = mask["backbone.body.conv1.weight"]
    assert torch.count_nonzero(weight.detach()[~keep]) == 0


def _qat(model, mask, log_dir, steps=3):
    loggers = sparseml_loggers(log_dir)  # never sparse_logs/ in the working directory
    manager = quantization_manager(quantization_recipe(None))
    qmask = prepare_qat(model, manager, loggers=loggers).mask(mask)
    holder = MaskHolder(model, qmask)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    stepper = manager.modify(model, optimizer, steps_per_epoch=10, loggers=loggers)
    train_steps(model, stepper, steps, after_each=holder.after_step)  # SparseML steps the optimizer
    assert holder.check(model) == 0
    return freeze(model).eval(), qmask


def test_qat_wraps_the_deepsparse_parts_only_and_holds_the_mask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # SparseML's default logger would write sparse_logs/ here
    model, mask = _tiny()
    qmodel, qmask = _qat(model, mask, tmp_path / "logs")
    layers = quantized_layers(qmodel)
    assert any(l.startswith("backbone.body.") for l in layers)
    assert any(l.startswith("roi_heads.box_head.") for l in layers)
    assert any(l.startswith("roi_heads.mask_head.") for l in layers)
    assert not any(l.startswith(("transform", "rpn.anchor_generator")) for l in layers)
    assert "roi_heads.mask_predictor.conv5_mask.conv.module" in layers  # the deconv, phased
    phase = qmodel.roi_heads.mask_predictor.conv5_mask.conv.module.weight
    phase_keep = qmask["roi_heads.mask_predictor.conv5_mask.conv.module.weight"]
    assert phase_keep.shape == phase.shape and torch.count_nonzero(phase.detach()[~phase_keep]) == 0
    assert not (tmp_path / "sparse_logs").exists()
    full = export_full(qmodel, tmp_path / "model.onnx", image_size=64, opset=17)
    assert verify_zeros(full, qmodel, qmask)["passed"]
    proto = onnx.load(str(full))
    types = _border_types(proto)
    parts = [to_deepsparse_int8(part_model(proto, p, types)) for p in partition(proto)
             if p.runtime == "deepsparse"]
    assert any(n.op_type == "ConvInteger" for p in parts for n in p.graph.node)
    part_file = tmp_path / "backbone_int8.onnx"
    onnx.save(parts[0], str(part_file))
    stats = pack(part_file, tmp_path / "backbone_int8.lthz")  # uint8 weights: the archive holds them
    assert unpack(tmp_path / "backbone_int8.lthz") == part_file.read_bytes()
    assert stats["archive_bytes"] < part_file.stat().st_size
    quantized = quantized_params(qmodel)
    keep = {n: m.numpy() for n, m in qmask.items()}
    result = verify_int8_zeros(parts, keep, quantized)
    assert result["passed"] and result["checked"] >= len(quantized & set(keep)) > 5
    # a pruned entry stored as anything but the zero point is caught
    name = next(n for n in keep if n.startswith("backbone.body.conv1"))
    stored, zero = next(w for w in int8_weights(parts[0]).values() if w[0].shape == keep[name].shape
                        and np.all(w[0][~keep[name]] == w[1]))
    init = next(i for i in parts[0].graph.initializer
                if numpy_helper.to_array(i).shape == stored.shape
                and np.array_equal(numpy_helper.to_array(i), stored))
    broken = stored.copy()
    broken[tuple(np.argwhere(~keep[name])[0])] = zero + 1
    init.CopyFrom(numpy_helper.from_array(broken, init.name))
    assert name in verify_int8_zeros(parts, keep, quantized)["failed"]


@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (4, 2, 1), (3, 3, 0), (5, 3, 1)])
def test_phase_conv_equals_the_transposed_conv_and_keeps_its_zeros(kernel, stride, pad):
    gen = torch.Generator().manual_seed(kernel * 10 + stride)
    deconv = torch.nn.ConvTranspose2d(6, 5, kernel, stride=stride, padding=pad)
    keep = torch.rand(deconv.weight.shape, generator=gen) > 0.7
    with torch.no_grad():
        deconv.weight.mul_(keep)
    phasing = phasing_of(deconv)
    assert phasing == Phasing(stride, pad)
    phase = PhaseConvTranspose2d(deconv, phasing)
    x = torch.rand(2, 6, 7, 7, generator=gen)
    with torch.no_grad():
        assert torch.allclose(phase(x), deconv(x), atol=1e-5)
    phase_keep = phase_mask(keep, phasing)
    assert phase_keep.shape == phase.conv.weight.shape
    assert int(phase_keep.sum()) == int(keep.sum())  # the same kept weights, at their taps
    assert torch.count_nonzero(phase.conv.weight.detach()[~phase_keep]) == 0


def test_only_exact_upsampling_deconvs_are_phased():
    assert phasing_of(torch.nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)) is None
    assert phasing_of(torch.nn.ConvTranspose2d(4, 4, 3, stride=2)) is None
    assert phasing_of(torch.nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)) is None
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ConvTranspose2d(4, 4, 2, stride=2))
    assert phase_deconvs(model) == {"1.weight": Phasing(2, 0)}
    assert isinstance(model[1], PhaseConvTranspose2d)


def test_shared_weight_chain_gets_one_copy_per_conv():
    weight = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], name="q"),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"], name="dq"),
             helper.make_node("Conv", ["x", "wd"], ["y1"], name="c1"),
             helper.make_node("Conv", ["x", "wd"], ["y2"], name="c2")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 3, 3]) for n in ("y1", "y2")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs, [weight, scale, zero]),
                              opset_imports=[helper.make_opsetid("", 17)])
    feed = {"x": np.random.default_rng(0).random((1, 2, 3, 3), dtype=np.float32)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feed)
    assert unshare_weight_qdq(model) == 1
    onnx.checker.check_model(model, full_check=True)
    weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    assert len(set(weights)) == 2
    after = ort.InferenceSession(model.SerializeToString()).run(None, feed)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def _dets(boxes, scores, labels):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4),
            "scores": np.array(scores, np.float32), "labels": np.array(labels)}


def test_int8_parity_judges_confident_detections():
    a = _dets([[0, 0, 20, 20], [30, 30, 50, 50]], [0.9, 0.2], [1, 2])
    shifted = _dets([[0.5, 0, 20.5, 20]], [0.88], [1])  # the low-scoring one dropped
    assert summarize_int8([(a, shifted)])["status"] == "ok"
    moved = _dets([[5, 5, 25, 25], [30, 30, 50, 50]], [0.9, 0.2], [1, 2])
    assert summarize_int8([(a, moved)])["status"] == "failed"
    relabeled = _dets([[0, 0, 20, 20]], [0.9], [2])
    assert summarize_int8([(a, relabeled)])["status"] == "failed"
    extra = _dets([[0, 0, 20, 20], [60, 60, 80, 80]], [0.9, 0.7], [1, 1])
    assert summarize_int8([(a, extra)])["status"] == "failed"  # a confident new detection
    weak = _dets([[0, 0, 20, 20]], [0.3], [1])
    assert summarize_int8([(weak, weak)])["status"] == "unchecked"  # nothing confident compared


def test_quantize_refuses_group_norm():
    with pytest.raises(RecipeError, match="group"):
        load_recipe(ROOT / "recipes" / "maskrcnn_lth.yaml", smoke=True,
                    overrides=[*TINY_LOTTERY, "model.norm=group", "quantize.enabled=true"])
