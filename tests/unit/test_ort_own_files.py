"""ONNX Runtime refusing a file: the user's file is a bad model file (exit 2); a file the toolkit
wrote itself (a deployment part) is the toolkit's fault, a plain RuntimeError (exit 1)."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from compress.core.errors import ModelFileError
from compress.evaluate.runtimes.ort import ort_session


def _unknown_op_model(path):
    """A well-formed ONNX file whose one node is an op ONNX Runtime does not have."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="lth.test")
    graph = helper.make_graph([node], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("lth.test", 1)])
    onnx.save(model, str(path))
    return path


def test_a_users_unloadable_file_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="not a loadable ONNX model"):
        ort_session(_unknown_op_model(tmp_path / "user.onnx"))


def test_the_toolkits_own_unloadable_part_is_a_plain_runtime_error(tmp_path):
    path = _unknown_op_model(tmp_path / "part.onnx")
    with pytest.raises(RuntimeError, match="toolkit's own graph .*part.onnx") as caught:
        ort_session(path, threads=1, user_file=False)
    assert not isinstance(caught.value, ModelFileError)
    assert "NoSuchOp" in str(caught.value)


def test_a_deployment_part_ort_refuses_is_the_toolkits_fault(tmp_path):
    import json

    from compress.core.deploy_manifest import FORMAT, MANIFEST
    from compress.evaluate.runtimes.pipeline import DeployedDetector

    _unknown_op_model(tmp_path / "head.onnx")
    manifest = {"format": FORMAT, "status": "ok", "source": "model.onnx", "input": "x",
                "canvas": {"height": 8, "width": 8},
                "outputs": ["y"], "parts": [{"name": "head", "runtime": "onnxruntime",
                                             "file": "head.onnx", "inputs": ["x"],
                                             "outputs": ["y"]}]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="toolkit's own graph") as caught:
        DeployedDetector(tmp_path, engine="onnxruntime", threads=1)
    assert not isinstance(caught.value, ModelFileError)
