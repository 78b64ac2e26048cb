"""Rewrite ConvTranspose nodes as a stride-1 Conv and a DepthToSpace (sub-pixel convolution).

DeepSparse 1.8 has no fast kernel for ConvTranspose: in Mask R-CNN's mask head at 100 RoIs its
own layer analysis put `conv5_mask` (256 -> 256, kernel 2, stride 2) at 0.0005% utilisation, more
than half of the whole head's time, dense or pruned. A transposed convolution with stride s
whose output is exactly s times its input (kernel k = s + 2p for padding p: Mask R-CNN's 2x2
stride 2, Keypoint R-CNN's 4x4 stride 2 padding 1) computes each of its s x s output phases as
an ordinary stride-1 convolution of the input: one Conv to O*s*s channels (channel
o*s*s + a*s + b is phase (a, b) of output channel o; `phase_kernel`) and DepthToSpace(blocksize
s, mode CRD) to interleave the phases. Every weight lands on exactly one tap: the same values and
the same zeros, so a pruned deconvolution stays exactly as sparse and DeepSparse runs it with its
(sparse) convolution kernels; kernel = stride gives a 1x1 Conv. Other ConvTransposes are left.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compress.export.deploy.partition import node_inputs


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewritable(node: onnx.NodeProto,
                weights: dict[str, onnx.TensorProto]) -> tuple[int, int] | None:
    """(stride s, padding p) when `node` is a 2-D ConvTranspose whose output is exactly s times
    its input (kernel k = s + 2p, symmetric padding, no groups, dilation or output padding)."""
    if node.op_type != "ConvTranspose" or node.input[1] not in weights:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in weights:
        return None  # a bias computed in the graph: left as it is
    attrs = _attrs(node)
    shape = list(weights[node.input[1]].dims)
    strides = list(attrs.get("strides", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    plain = (attrs.get("group", 1) == 1 and set(attrs.get("dilations", [1])) == {1}
             and not any(attrs.get("output_padding", [0])) and "output_shape" not in attrs
             and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))
    if len(shape) != 4 or len(set(strides)) != 1 or len(set(pads)) != 1 or not plain:
        return None
    stride, pad = int(strides[0]), int(pads[0])
    if shape[2] != shape[3] or shape[2] != stride + 2 * pad:
        return None
    return stride, pad


def phase_kernel(weight: np.ndarray, stride: int,
                 pad: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The stride-1 convolution weight (O*s*s x C x t x t) and its padding (before, after) that,
    followed by
    DepthToSpace(s, CRD), equals ConvTranspose(weight: C x O x k x k, stride s, padding p).

    Output pixel (s*m + a, s*n + b) of the transposed convolution reads input pixel m + e along
    each axis through tap i = a + p - s*e: every weight lands on exactly one tap of one phase
    (a, b), so the nonzeros are the same in number and value."""
    channels, out, kernel = weight.shape[0], weight.shape[1], weight.shape[2]
    taps = {(a, i): (a + pad - i) // stride for a in range(stride) for i in range(kernel)
            if (a + pad - i) % stride == 0}
    low, high = min(taps.values()), max(taps.values())
    size = high - low + 1
    conv = np.zeros((out, stride, stride, channels, size, size), dtype=weight.dtype)
    for (a, i), e_h in taps.items():
        for (b, j), e_w in taps.items():
            conv[:, a, b, :, e_h - low, e_w - low] = weight[:, :, i, j].T
    return conv.reshape(out * stride * stride, channels, size, size), (-low, high)


def rewrite_deconvs(model: onnx.ModelProto) -> list[str]:
    """Replace every rewritable ConvTranspose of `model` in place; the names of those replaced."""
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    done = []
    for position, node in enumerate(list(graph.node)):
        found = _rewritable(node, weights)
        if found is None:
            continue
        stride, pad = found
        label = node.name or f"/lth_deconv_{position}"  # unnamed nodes: unique by position
        weight = numpy_helper.to_array(weights[node.input[1]])  # C x O x k x k
        conv_w, conv_pad = phase_kernel(weight, stride, pad)
        names = {"w": f"{label}/lth_phase.weight", "y": f"{label}/lth_phase_output"}
        inits = [numpy_helper.from_array(np.ascontiguousarray(conv_w), names["w"])]
        inputs = [node.input[0], names["w"]]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(weights[node.input[2]])
            names["b"] = f"{label}/lth_phase.bias"
            inits.append(numpy_helper.from_array(np.repeat(bias, stride * stride), names["b"]))
            inputs.append(names["b"])
        conv = helper.make_node("Conv", inputs, [names["y"]], name=f"{label}/lth_phase",
                                kernel_shape=list(conv_w.shape[2:]),
                                pads=[conv_pad[0], conv_pad[0], conv_pad[1], conv_pad[1]])
        shuffle = helper.make_node("DepthToSpace", [names["y"]], list(node.output),
                                   name=f"{label}/lth_depth_to_space", blocksize=stride,
                                   mode="CRD")
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, shuffle)
        graph.node.insert(index, conv)
        graph.initializer.extend(inits)
        done.append(label)
    used = {name for n in graph.node for name in node_inputs(n)}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return done
