"""Compact archive (byte-exact, near the information bound), sparse initializers, size table."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.core.errors import ModelFileError
from compress.export.compact import bound_bytes, pack, unpack, unpack_to
from compress.export.onnx_export import export_backbone, export_full
from compress.export.sizes import export_summary, format_size_table, size_table
from compress.export.sparse_initializers import to_sparse_initializers
from support.onnx_models import SIZE, pruned_tiny


def matmul_model(path, weights: dict[str, np.ndarray]) -> None:
    """y = x @ W1 @ W2 ... with the given square fp32 initializers."""
    names = list(weights)
    nodes, prev = [], "x"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("MatMul", [prev, name], [f"y{i}"]))
        prev = f"y{i}"
    n = next(iter(weights.values())).shape[0]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def sparse_normal(n: int, sparsity: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n * n).astype(np.float32)
    w[rng.random(n * n) < sparsity] = 0.0
    return w.reshape(n, n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.set_num_threads(1)
    model, mask = pruned_tiny("fasterrcnn")
    folder = tmp_path_factory.mktemp("compact")
    return {"full": export_full(model, folder / "model.onnx", image_size=SIZE),
            "backbone": export_backbone(model, folder / "backbone.onnx", image_size=SIZE),
            "mask": mask, "folder": folder}


@pytest.mark.parametrize("graph", ["full", "backbone"])
def test_unpack_is_byte_identical(tiny_onnx, graph, tmp_path):
    original = tiny_onnx[graph].read_bytes()
    stats = pack(tiny_onnx[graph], tmp_path / "m.lthz")
    assert stats["archive_bytes"] == (tmp_path / "m.lthz").stat().st_size < len(original) / 2
    assert sha(unpack(tmp_path / "m.lthz")) == sha(original)
    out = unpack_to(tmp_path / "m.lthz", tmp_path / "back.onnx")
    assert out.read_bytes() == original


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_bound_ratio_on_1m_weights(tmp_path, sparsity):
    weights = sparse_normal(1000, sparsity, seed=int(sparsity * 100))
    matmul_model(tmp_path / "w.onnx", {"W": weights})
    stats = pack(tmp_path / "w.onnx", tmp_path / "w.lthz")
    zeros = int((weights == 0).sum())
    p = zeros / weights.size
    entropy_bits = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    expected_bound = weights.size * (entropy_bits / 8 + 4 * (1 - p))
    assert stats["bound_bytes"] == pytest.approx(expected_bound)
    assert stats["archive_bytes"] <= 1.03 * expected_bound  # whole file, graph and header included
    row = stats["tensors"][0]
    assert row["form"] == "sparse"
    # The mask coder alone is within 3% of the mask entropy; values are at most 4 bytes each.
    assert row["mask_bytes"] <= 1.03 * weights.size * entropy_bits / 8
    assert row["values_bytes"] <= 4 * (weights.size - zeros) + 64
    assert unpack(tmp_path / "w.lthz") == (tmp_path / "w.onnx").read_bytes()


def test_odd_values_and_forms_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    odd = rng.standard_normal((64, 64)).astype(np.float32)
    odd.flat[:6] = [-0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45]
    structured = np.zeros((64, 64), np.float32)
    structured[:, :3] = rng.standard_normal((64, 3))  # channel-style sparsity
    mostly_dense = rng.standard_normal((64, 64)).astype(np.float32)
    mostly_dense[rng.random((64, 64)) < 0.1] = 0.0
    weights = {"odd": odd, "zeros": np.zeros((64, 64), np.float32), "structured": structured,
               "mostly_dense": mostly_dense}
    matmul_model(tmp_path / "o.onnx", weights)
    stats = pack(tmp_path / "o.onnx", tmp_path / "o.lthz")
    assert unpack(tmp_path / "o.lthz") == (tmp_path / "o.onnx").read_bytes()
    forms = {t["name"]: t["form"] for t in stats["tensors"]}
    assert forms["odd"] == "dense" and forms["zeros"] == "sparse"
    assert forms["structured"] == "sparse"


def test_bad_archives(tmp_path, tiny_onnx):
    pack(tiny_onnx["backbone"], tmp_path / "m.lthz")
    data = (tmp_path / "m.lthz").read_bytes()
    (tmp_path / "cut.lthz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.lthz").write_bytes(b"PK\x03\x04 not an archive")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    (tmp_path / "flip.lthz").write_bytes(bytes(flipped))
    for name in ("cut.lthz", "junk.lthz", "flip.lthz", "missing.lthz"):
        with pytest.raises(ModelFileError) as info:
            unpack(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_pack_rejects_non_onnx_and_writes_nothing(tmp_path, tiny_onnx):
    (tmp_path / "text.onnx").write_text("hello")
    data = tiny_onnx["backbone"].read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) * 2 // 3])
    for name in ("text.onnx", "cut.onnx"):
        with pytest.raises(ModelFileError):
            pack(tmp_path / name, tmp_path / "out.lthz")
        with pytest.raises(ModelFileError):
            to_sparse_initializers(tmp_path / name, tmp_path / "out.onnx")
    assert not (tmp_path / "out.lthz").exists() and not (tmp_path / "out.onnx").exists()


def test_sparse_initializers_choose_by_size(tmp_path):
    weights = {"s95": sparse_normal(64, 0.95, 1), "s75": sparse_normal(64, 0.75, 2),
               "s50": sparse_normal(64, 0.5, 3)}
    matmul_model(tmp_path / "d.onnx", weights)
    stats = to_sparse_initializers(tmp_path / "d.onnx", tmp_path / "s.onnx")
    converted = {t["name"]: t["converted"] for t in stats["tensors"]}
    # INT64 indices: 12 bytes per nonzero against 4 per weight, so 75% sparse pays, 50% does not.
    assert converted == {"s95": True, "s75": True, "s50": False}
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    dense = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    sparse = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(dense.run(None, {"x": x})[0], sparse.run(None, {"x": x})[0])


@pytest.mark.parametrize("graph", ["full", "backbone"])
def test_sparse_initializer_onnx_same_ort_outputs(tiny_onnx, graph, tmp_path):
    stats = to_sparse_initializers(tiny_onnx[graph], tmp_path / "s.onnx")
    assert stats["converted"] > 0 and stats["sparse_bytes"] < stats["dense_bytes"]
    rng = np.random.default_rng(1)
    shape = (3, SIZE, SIZE + 8) if graph == "full" else (2, 3, SIZE, SIZE)
    feed = {"images": rng.random(shape).astype(np.float32)}
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)
            for p in (tiny_onnx[graph], tmp_path / "s.onnx")]
    assert len(outs[0]) == len(outs[1])
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


def test_size_table(tiny_onnx, tmp_path):
    onnx_path = tiny_onnx["full"]
    to_sparse_initializers(onnx_path, tmp_path / "s.onnx")
    pack(onnx_path, tmp_path / "m.lthz")
    table = size_table(onnx_path, tmp_path / "s.onnx", tmp_path / "m.lthz", tiny_onnx["mask"])
    o = table["overall"]
    assert o["onnx_bytes"] == onnx_path.stat().st_size
    assert o["compact_bytes"] < o["gzip_bytes"] < o["onnx_bytes"]
    assert o["sparse_onnx_bytes"] < o["onnx_bytes"]
    pruned = [r for r in table["tensors"] if r["pruned"]]
    assert {r["torch_name"] for r in pruned} == set(tiny_onnx["mask"])
    for row in pruned:
        zeros = int((~tiny_onnx["mask"][row["torch_name"]]).sum())
        assert row["sparsity"] == pytest.approx(zeros / row["numel"])
        assert row["bound_bytes"] == pytest.approx(bound_bytes(row["numel"], zeros))
    summary = export_summary(table, {"zeros": {"tensors": {}, "passed": True},
                                     "parity": {"kind": "full", "max_box_diff": 2e-6}})
    assert summary["compact_bytes"] == o["compact_bytes"] and summary["zeros_preserved"]
    assert summary["max_abs_diff"] == 2e-6
    text = format_size_table(table)
    assert "TOTAL" in text and "backbone.body.conv1.weight" in text
