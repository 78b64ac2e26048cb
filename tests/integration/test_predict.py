"""`compress predict` on a smoke run's exported ONNX and its torch ticket: annotated images and a
COCO results file that `compress evaluate --gt --results` accepts; bad input is one line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.cli import main
from compress.stages.predict import assign_image_ids, fit_to_graph, keep_scores
from compress.report.drawing import draw_detections
from compress.evaluate.metrics.results_file import evaluate_results_file
from support.smoke import smoke_run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run_dir(tmp_path_factory)


def _predict(args: list[str]) -> int:
    return main(["-q", "predict", *args])


def test_onnx_predict_writes_images_and_coco_results(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    val = run_dir / "data" / "val"
    assert _predict([str(run_dir / "export" / "model.onnx"), str(val), "--out", str(out),
                     "--score-threshold", "0"]) == 0
    images = sorted(val.glob("*.png"))
    for image in images:
        drawn = Image.open(out / image.name)
        assert drawn.size == (256, 256)  # 64 px images are drawn enlarged 4x
    results = json.loads((out / "detections.json").read_text())
    assert results, "threshold 0 keeps every detection"
    gt = run_dir / "data" / "annotations" / "instances_val.json"
    gt_ids = {img["file_name"]: img["id"] for img in json.loads(gt.read_text())["images"]}
    assert {r["image_id"] for r in results} <= set(gt_ids.values())
    assert all("segmentation" in r for r in results)
    for iou_type in ("bbox", "segm"):
        metrics = evaluate_results_file(gt, out / "detections.json", iou_type)
        assert 0.0 <= metrics[iou_type]["AP"] <= 1.0
    assert main(["evaluate", "--gt", str(gt), "--results", str(out / "detections.json")]) == 0


def test_run_onnx_keeps_dynamic_image_size(run_dir: Path) -> None:
    """export_full's contract: `images` is 3 x H x W with H, W dynamic, so predict runs any size."""
    import onnx

    graph = onnx.load(str(run_dir / "export" / "model.onnx"), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert all(isinstance(d, str) for d in dims[1:]), (
        f"export/model.onnx takes fixed {dims} images: it was rewritten after export (DeepSparse's "
        "compile_model(input_shapes=...) overrides the ONNX file in place; compile a copy)")


def test_onnx_matches_torch_ticket(run_dir: Path, tmp_path: Path) -> None:
    """A fresh export of the ticket and the torch ticket give the same detections on one image
    (the ONNX sits outside the run folder: category id = label, which the synthetic set shares)."""
    image = run_dir / "data" / "val" / "000001.png"
    assert main(["-q", "export", str(run_dir), "--out", str(tmp_path / "export")]) == 0
    assert _predict([str(tmp_path / "export" / "model.onnx"), str(image), "--out", str(tmp_path / "a"),
                     "--score-threshold", "0"]) == 0
    assert _predict([str(run_dir / "ticket.pt"), str(image), "--engine", "torch", "--out",
                     str(tmp_path / "b"), "--score-threshold", "0"]) == 0
    onnx_results = json.loads((tmp_path / "a" / "detections.json").read_text())
    ticket = json.loads((tmp_path / "b" / "detections.json").read_text())
    assert len(onnx_results) == len(ticket) > 0
    for a, b in zip(onnx_results, ticket):
        assert a["category_id"] == b["category_id"] and a["image_id"] == b["image_id"] == 1
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-3) and abs(a["score"] - b["score"]) < 1e-4


def test_threshold_filters_what_is_written(run_dir: Path, tmp_path: Path) -> None:
    image = run_dir / "data" / "val" / "000002.png"
    assert _predict([str(run_dir / "export" / "model.onnx"), str(image), "--out", str(tmp_path / "all"),
                     "--score-threshold", "0"]) == 0
    assert _predict([str(run_dir / "export" / "model.onnx"), str(image), "--out", str(tmp_path / "some"),
                     "--score-threshold", "0.1"]) == 0
    every = json.loads((tmp_path / "all" / "detections.json").read_text())
    some = json.loads((tmp_path / "some" / "detections.json").read_text())
    assert some == [r for r in every if r["score"] >= 0.1]


@pytest.mark.parametrize("case", ["missing_dir", "not_image", "bad_model", "wrong_engine", "txt_model"])
def test_bad_input_is_one_line(case: str, run_dir: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    onnx, image = run_dir / "export" / "model.onnx", run_dir / "data" / "val" / "000001.png"
    junk = tmp_path / "junk.png"
    junk.write_text("not a png")
    args = {"missing_dir": [str(onnx), str(tmp_path / "nope")],
            "not_image": [str(onnx), str(junk)],
            "bad_model": [str(junk.with_suffix(".onnx")), str(image)],
            "wrong_engine": [str(onnx), str(image), "--engine", "torch"],
            "txt_model": [str(junk.with_suffix(".txt")), str(image)]}[case]
    if case == "bad_model":
        junk.with_suffix(".onnx").write_bytes(b"\x08\x01garbage")
    if case == "txt_model":
        junk.with_suffix(".txt").write_text("x")
    assert _predict([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err


def test_image_ids_match_annotations_then_run_on() -> None:
    files = [Path("b.png"), Path("x.png"), Path("a.png"), Path("y.png")]
    assert assign_image_ids(files, {"a.png": 7, "b.png": 3}) == [3, 8, 7, 9]
    assert assign_image_ids(files[:2], {}) == [1, 2]


def test_drawing_marks_boxes_masks_and_keypoints() -> None:
    image = torch.full((3, 100, 100), 0.5)
    masks = torch.zeros(2, 1, 100, 100)
    masks[0, 0, 20:40, 20:40] = 1.0
    keypoints = torch.zeros(2, 17, 3)
    keypoints[0, :, 0], keypoints[0, :, 1], keypoints[0, :, 2] = 70.0, torch.linspace(10, 90, 17), 1.0
    outputs = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]]),
               "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.2]),
               "masks": masks, "keypoints": keypoints}
    drawn = np.asarray(draw_detections(image, outputs, class_names={1: "rect"}, score_threshold=0.5,
                                       min_side_px=100))
    grey = np.array([128, 128, 128])
    assert (drawn[30, 30] != grey).any()  # inside the kept mask: tinted
    assert (drawn[10, 30] != grey).any()  # on the kept box's top edge
    assert (drawn[75, 75] == grey).all() and (drawn[60, 75] == grey).all()  # low score: not drawn
    assert (drawn[50, 70] != grey).any()  # a keypoint of the kept person
    kept = keep_scores(outputs, 0.5)
    assert kept["boxes"].shape == (1, 4) and kept["masks"].shape == (1, 1, 100, 100)


def test_fixed_size_graph_gets_resized_images_and_mapped_back_outputs() -> None:
    seen = []

    def detector(image: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(tuple(image.shape))
        masks = torch.zeros(1, 1, 128, 256)
        masks[..., :64, :128] = 1.0
        return {"boxes": torch.tensor([[32.0, 16.0, 64.0, 32.0]]), "scores": torch.tensor([0.9]),
                "labels": torch.tensor([1]), "keypoints": torch.tensor([[[64.0, 32.0, 1.0]]]),
                "masks": masks}

    predict = fit_to_graph(detector, [3, 128, 256])
    out = predict(torch.rand(3, 64, 64))
    assert seen == [(3, 128, 256)]
    assert torch.allclose(out["boxes"], torch.tensor([[8.0, 8.0, 16.0, 16.0]]))
    assert torch.allclose(out["keypoints"], torch.tensor([[[16.0, 16.0, 1.0]]]))
    assert out["masks"].shape == (1, 1, 64, 64) and out["masks"][0, 0, 10, 10] == 1 and out["masks"][0, 0, 50, 50] == 0
    assert fit_to_graph(detector, [3, "height", "width"]) is detector
