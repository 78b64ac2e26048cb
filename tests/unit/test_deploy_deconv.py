"""ConvTranspose rewritten as a stride-1 Conv + DepthToSpace (Mask R-CNN's 2x2 stride 2,
Keypoint R-CNN's 4x4 stride 2 padding 1, and others whose output is stride x the input): equal
outputs on ONNX Runtime, the same nonzero weights, other deconvolutions left alone."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.export.deploy.deconv import rewrite_deconvs


def _deconv_model(kernel: int, stride: int, pads: int, bias: bool, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((6, 5, kernel, kernel)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.7] = 0.0  # a pruned deconvolution
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("ConvTranspose", inputs, ["y"], name="/roi_heads/mask_predictor/up",
                            kernel_shape=[kernel, kernel], strides=[stride, stride],
                            pads=[pads] * 4)
    relu = helper.make_node("Relu", ["y"], ["z"], name="/roi_heads/mask_predictor/relu")
    graph = helper.make_graph([node, relu], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6, 7, 9])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 5, None, None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _nonzeros(model: onnx.ModelProto) -> list[float]:
    return sorted(v for i in model.graph.initializer if len(i.dims) == 4
                  for v in numpy_helper.to_array(i).ravel().tolist() if v != 0)


@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (3, 3, 0), (4, 2, 1), (5, 3, 1), (6, 2, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_rewritten_deconv_equals_the_original_with_the_same_nonzeros(kernel, stride, pad, bias):
    original = _deconv_model(kernel, stride, pad, bias)
    rewritten = onnx.load_from_string(original.SerializeToString())
    assert rewrite_deconvs(rewritten) == ["/roi_heads/mask_predictor/up"]
    onnx.checker.check_model(rewritten, full_check=True)
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "DepthToSpace", "Relu"]
    assert all(n.name.startswith("/roi_heads/mask_predictor/") for n in rewritten.graph.node)
    assert _nonzeros(rewritten) == _nonzeros(original) and _nonzeros(original)
    x = np.random.default_rng(1).standard_normal((3, 6, 7, 9)).astype(np.float32)
    expected, got = _run(original, x), _run(rewritten, x)
    assert got.shape == expected.shape == (3, 5, 7 * stride, 9 * stride)
    assert np.abs(got - expected).max() < 1e-5


def test_deconv_not_stride_times_its_input_is_left_alone():
    """Kernel 3, stride 2, padding 1: 2H - 1 rows out, not a whole number of phases."""
    model = _deconv_model(3, 2, 1, True)
    assert rewrite_deconvs(model) == []
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose", "Relu"]
