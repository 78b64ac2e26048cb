"""Rewrite non-overlapping ConvTranspose nodes as a 1x1 Conv and a DepthToSpace.

DeepSparse 1.8 has no fast kernel for ConvTranspose: in Mask R-CNN's mask head at 100 RoIs its
own layer analysis put `conv5_mask` (256 -> 256, kernel 2, stride 2) at 0.0005% utilisation, more
than half of the whole head's time, dense or pruned. A transposed convolution whose kernel equals
its stride (no padding, no dilation, no groups) writes every output pixel from exactly one input
pixel: out[n, o, s*h + i, s*w + j] = sum_c x[n, c, h, w] * W[c, o, i, j] + b[o]. That is a 1x1
convolution to O*s*s channels (channel o*s*s + i*s + j holds W[:, o, i, j]) followed by
DepthToSpace(blocksize s, mode CRD): the same values and the same zeros, rearranged, so a pruned
deconvolution stays exactly as sparse and DeepSparse runs it with its (sparse) convolution
kernels. Other ConvTransposes (Keypoint R-CNN's overlapping 4x4 stride-2 upsampler) are left.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.deploy.partition import node_inputs


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewritable(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> int | None:
    """The stride s when `node` is a ConvTranspose with a kernel of s x s, stride s, else None."""
    if node.op_type != "ConvTranspose" or node.input[1] not in weights:
        return None
    attrs = _attrs(node)
    shape = list(weights[node.input[1]].dims)
    strides = list(attrs.get("strides", [1, 1]))
    plain = (attrs.get("group", 1) == 1 and not any(attrs.get("pads", [0]))
             and set(attrs.get("dilations", [1])) == {1} and not any(attrs.get("output_padding", [0]))
             and "output_shape" not in attrs and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))
    if len(shape) != 4 or len(set(strides)) != 1 or shape[2:] != strides or not plain:
        return None
    return int(strides[0])


def rewrite_deconvs(model: onnx.ModelProto) -> list[str]:
    """Replace every rewritable ConvTranspose of `model` in place; the names of those replaced."""
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    done = []
    for node in list(graph.node):
        stride = _rewritable(node, weights)
        if stride is None:
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])  # C x O x s x s
        channels, out = weight.shape[:2]
        conv_w = weight.transpose(1, 2, 3, 0).reshape(out * stride * stride, channels, 1, 1)
        names = {"w": f"{node.name}/lth_1x1.weight", "y": f"{node.name}/lth_1x1_output"}
        inits = [numpy_helper.from_array(np.ascontiguousarray(conv_w), names["w"])]
        inputs = [node.input[0], names["w"]]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(weights[node.input[2]])
            names["b"] = f"{node.name}/lth_1x1.bias"
            inits.append(numpy_helper.from_array(np.repeat(bias, stride * stride), names["b"]))
            inputs.append(names["b"])
        conv = helper.make_node("Conv", inputs, [names["y"]], name=f"{node.name}/lth_1x1",
                                kernel_shape=[1, 1])
        shuffle = helper.make_node("DepthToSpace", [names["y"]], list(node.output),
                                   name=f"{node.name}/lth_depth_to_space", blocksize=stride,
                                   mode="CRD")
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, shuffle)
        graph.node.insert(index, conv)
        graph.initializer.extend(inits)
        done.append(node.name)
    used = {name for n in graph.node for name in node_inputs(n)}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return done
