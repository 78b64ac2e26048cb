"""The audit's bad inputs (issue 23, items 7 and 8): each exits 2 with one line naming the file and
the field, never a traceback; box values a detector can emit are dropped with a warning that
names the count."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from pycocotools import mask as mask_utils
from support.recipes import ROOT

from compress.cli import main
from compress.core.checkpoint import check_state_dict_fits
from compress.core.errors import ModelFileError

GT = {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}],
      "categories": [{"id": 1, "name": "box"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
                       "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}]}


def _rle(height: int = 10, width: int = 20) -> dict:
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[1:6, 1:6] = 1
    rle = mask_utils.encode(mask)
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _result(**changes) -> dict:
    return {"image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.9,
            "segmentation": _rle(), **changes}


RESULTS = {  # name -> (iou type, file text, what the line must name)
    "nan_score": ("bbox", [_result(score=math.nan)], "score"),
    "string_score": ("bbox", [_result(score="high")], "score"),
    "nested_box": ("bbox", [_result(bbox=[[1, 1], 1, 5, 5])], "bbox"),
    "null_box": ("bbox", [_result(bbox=[None, 1, 5, 5])], "bbox"),
    "bool_category": ("bbox", [_result(category_id=True)], "category_id"),
    "string_image_id": ("bbox", [_result(image_id="1")], "image_id"),
    "rle_bad_chars": ("segm", [_result(segmentation={"size": [10, 20], "counts": "~~~~"})], "counts"),
    "rle_short_counts": ("segm", [_result(segmentation={"size": [10, 20], "counts": [5, 3]})], "counts"),
    "rle_counts_number": ("segm", [_result(segmentation={"size": [10, 20], "counts": 7})], "counts"),
    "rle_size_not_image": ("segm", [_result(segmentation=_rle(20, 10))], "size"),
    "deep_nesting": ("bbox", "[" * 100_000 + "]" * 100_000, "nested"),
}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _evaluate(tmp_path: Path, iou_type: str, results, out: Path | None = None) -> int:
    gt = _write(tmp_path / "gt.json", GT)
    dt = _write(tmp_path / "dt.json", results)
    return main(["evaluate", "--gt", str(gt), "--results", str(dt), "--iou-type", iou_type,
                 "--out", str(out or tmp_path / "out")])


def _onnx(path: Path, op: str = "Relu", shape=(1, 3, 8, 8)) -> Path:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node(op, ["images"], ["out"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run_folder(root: Path, summary: dict) -> Path:
    (root / "rounds").mkdir(parents=True)
    shutil.copy(ROOT / "recipes" / "maskrcnn_lth.yaml", root / "recipe.yaml")
    _write(root / "summary.json", summary)
    return root


def _results_case(name):
    def run(tmp_path):
        iou_type, results, _ = RESULTS[name]
        return _evaluate(tmp_path, iou_type, results), [RESULTS[name][2], "dt.json"]
    return run


def _checkpoint_model_string(tmp_path):
    run = _run_folder(tmp_path / "run", {"num_classes": 3})
    torch.save({"model": "weights"}, run / "ticket.pt")
    torch.save({}, run / "mask.pt")
    return main(["export", str(run)]), ["ticket.pt", "model", "state dict"]


def _summary_wrong_types(tmp_path):
    run = _run_folder(tmp_path / "run", {"rounds": [{"round": "zero", "sparsity": 0.0}]})
    return main(["report", str(run)]), ["summary.json", "rounds[0].round", "integer"]


def _summary_not_an_object(tmp_path):
    run = _run_folder(tmp_path / "run", {"rounds": [{"round": 0, "sparsity": 0.0, "metrics": "good"}]})
    return main(["report", str(run)]), ["summary.json", "rounds[0].metrics", "object"]


def _out_under_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    code = _evaluate(tmp_path, "bbox", [_result()], out=tmp_path / "notes.txt" / "eval")
    return code, ["notes.txt is a file"]


def _bench_112_gib_input(tmp_path):
    model = _onnx(tmp_path / "huge.onnx", shape=(1, 3, 100_000, 100_000))
    return main(["bench", str(model), "--engine", "onnxruntime"]), ["huge.onnx", "images", "GiB"]


def _predict(tmp_path, model: Path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    return main(["predict", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")])


def _zero_byte_onnx(tmp_path):
    (tmp_path / "zero.onnx").write_bytes(b"")
    return _predict(tmp_path, tmp_path / "zero.onnx"), ["zero.onnx", "empty"]


def _unknown_op_onnx(tmp_path):
    model = _onnx(tmp_path / "odd.onnx", op="FrobnicateOp")
    return _predict(tmp_path, model), ["odd.onnx", "FrobnicateOp"]


CASES = {**{f"results_{name}": _results_case(name) for name in RESULTS},
         "checkpoint_model_string": _checkpoint_model_string,
         "summary_wrong_types": _summary_wrong_types,
         "summary_metrics_not_an_object": _summary_not_an_object,
         "out_under_a_file": _out_under_a_file,
         "bench_112_gib_input": _bench_112_gib_input,
         "zero_byte_onnx": _zero_byte_onnx,
         "unknown_op_onnx": _unknown_op_onnx}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_in_one_line(case, tmp_path, capsys):
    code, named = CASES[case](tmp_path)
    err = _one_line(capsys)
    assert code == 2, err
    assert err.startswith("error:") and all(part in err for part in named), err


def test_summary_of_wrong_types_rewrites_no_plot(tmp_path, capsys):
    run = _run_folder(tmp_path / "run", {"rounds": [{"round": 0, "sparsity": "most"}]})
    (run / "plots").mkdir()
    (run / "plots" / "sparsity_vs_map.png").write_bytes(b"the plot of the last good report")
    assert main(["report", str(run)]) == 2
    assert "rounds[0].sparsity" in _one_line(capsys)
    assert (run / "plots" / "sparsity_vs_map.png").read_bytes() == b"the plot of the last good report"
    assert not (run / "report.md").exists()


def test_boxes_a_detector_can_emit_are_dropped_with_a_count(tmp_path, capsys):
    bad = [[math.nan, 1, 5, 5], [1, 1, math.inf, 5], [1, 1, -5, 5], [1e308, 1, 5, 5]]
    results = [_result()] + [_result(bbox=box) for box in bad]
    assert _evaluate(tmp_path, "bbox", results) == 0
    assert "dt.json: dropped 4 of 5 result(s)" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)


def test_dollar_signs_in_labels_are_drawn_as_text(tmp_path, capsys):
    rounds = [{"round": k, "sparsity": s, "prunable_sparsity": s, "metrics": {"bbox_mAP": m}}
              for k, s, m in ((0, 0.0, 0.5), (1, 0.5, 0.4))]
    run = _run_folder(tmp_path / "cats$\\frac$", {"rounds": rounds})
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    assert Image.open(run / "plots" / "sparsity_vs_map.png").size[0] > 100


def test_a_wrong_shape_checkpoint_names_the_key(tmp_path):
    expected = {"backbone.conv.weight": torch.zeros(8, 3, 3, 3), "head.bias": torch.zeros(4)}
    wrong = {"backbone.conv.weight": torch.zeros(8, 3, 3, 3), "head.bias": torch.zeros(5)}
    with pytest.raises(ModelFileError, match=r"ticket.pt: model.head.bias: shape \(5,\) does not fit"):
        check_state_dict_fits(wrong, expected, tmp_path / "ticket.pt")
    with pytest.raises(ModelFileError, match="model.head.bias: missing"):
        check_state_dict_fits({"backbone.conv.weight": torch.zeros(8, 3, 3, 3)}, expected, "ticket.pt")
    with pytest.raises(ModelFileError, match="model.extra: not a parameter"):
        check_state_dict_fits({**expected, "extra": torch.zeros(1)}, expected, "ticket.pt")
