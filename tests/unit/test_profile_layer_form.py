"""The latency profile times each layer in the form the deployment runs it: Mask R-CNN's
deconvolution as the 1x1 Conv + DepthToSpace of `compress.export.deploy.deconv`, same values."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from compress.lottery.profile import _pruned_layer, export_layer


def test_deconv_is_profiled_as_deployed(tmp_path):
    module = nn.ConvTranspose2d(8, 6, 2, 2)
    export_layer(module, (3, 8, 5, 5), 0.7, tmp_path / "layer.onnx")
    graph = onnx.load(str(tmp_path / "layer.onnx"))
    assert [n.op_type for n in graph.graph.node] == ["Conv", "DepthToSpace"]
    x = torch.rand(3, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = _pruned_layer(module, 0.7)(x).detach().numpy()
    session = ort.InferenceSession(str(tmp_path / "layer.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-5


def test_other_layers_keep_their_form(tmp_path):
    export_layer(nn.ConvTranspose2d(8, 6, 3, 2, 1), (1, 8, 5, 5), 0.5, tmp_path / "kp.onnx")
    assert [n.op_type for n in onnx.load(str(tmp_path / "kp.onnx")).graph.node] == ["ConvTranspose"]
