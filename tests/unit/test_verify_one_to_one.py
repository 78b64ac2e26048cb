"""verify_zeros maps torch tensors to ONNX initializers one to one, and says so when it cannot."""
from __future__ import annotations

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.export.verify import map_initializers, verify_zeros

N = 8


class TwoLayers(torch.nn.Module):
    """lin2's weight is twice lin1's: equal up to a per-channel scale, as a folded BatchNorm is."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = torch.nn.Linear(N, N, bias=False)
        self.lin2 = torch.nn.Linear(N, N, bias=False)
        with torch.no_grad():
            w = torch.randn(N, N, generator=torch.Generator().manual_seed(0))
            w[w.abs() < 0.5] = 0.0
            self.lin1.weight.copy_(w)
            self.lin2.weight.copy_(2 * w)


def _onnx(path, model: TwoLayers, node_names: tuple[str, str], shared: bool) -> None:
    """y = x @ A @ B (B = A when `shared`), initializers renamed as an exporter's folding does."""
    weights = {"onnx::A": model.lin1.weight.detach().numpy()}
    if not shared:
        weights["onnx::B"] = model.lin2.weight.detach().numpy()
    second = "onnx::A" if shared else "onnx::B"
    nodes = [helper.make_node("MatMul", ["x", "onnx::A"], ["h"], name=node_names[0]),
             helper.make_node("MatMul", ["h", second], ["y"], name=node_names[1])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _mask(model: TwoLayers) -> dict[str, torch.Tensor]:
    return {"lin1.weight": model.lin1.weight != 0, "lin2.weight": model.lin2.weight != 0}


# Node scopes that name the layer but no module under it: found only by the value fallback.
UNSCOPED = ("/lin1/Fused/MatMul", "/lin2/Fused/MatMul")


def test_fallback_gives_each_initializer_to_one_tensor(tmp_path):
    model = TwoLayers()
    _onnx(tmp_path / "m.onnx", model, UNSCOPED, shared=False)
    result = verify_zeros(tmp_path / "m.onnx", model, _mask(model))
    chosen = {name: t["initializer"] for name, t in result["tensors"].items()}
    assert chosen == {"lin1.weight": "onnx::A", "lin2.weight": "onnx::B"}
    assert result["passed"]


def test_fallback_fails_clearly_when_the_only_match_is_taken(tmp_path):
    model = TwoLayers()
    _onnx(tmp_path / "m.onnx", model, UNSCOPED, shared=True)
    result = verify_zeros(tmp_path / "m.onnx", model, _mask(model))
    assert result["tensors"]["lin1.weight"]["initializer"] == "onnx::A"
    second = result["tensors"]["lin2.weight"]
    assert not second["passed"] and second["initializer"] is None
    assert "onnx::A" in second["reason"] and "lin1.weight" in second["reason"]
    assert not result["passed"] and result["failed"] == ["lin2.weight"]


def test_scope_mapping_is_one_to_one(tmp_path):
    model = TwoLayers()
    _onnx(tmp_path / "m.onnx", model, ("/lin1/MatMul", "/lin2/MatMul"), shared=True)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert map_initializers(proto, ["lin1.weight", "lin2.weight"]) == {"lin1.weight": "onnx::A"}
    assert not verify_zeros(tmp_path / "m.onnx", model, _mask(model))["passed"]
    _onnx(tmp_path / "d.onnx", model, ("/lin1/MatMul", "/lin2/MatMul"), shared=False)
    proto = onnx.load(str(tmp_path / "d.onnx"))
    assert map_initializers(proto, ["lin1.weight", "lin2.weight"]) == {
        "lin1.weight": "onnx::A", "lin2.weight": "onnx::B"}
    assert verify_zeros(tmp_path / "d.onnx", model, _mask(model))["passed"]
