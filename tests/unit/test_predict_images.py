"""`compress predict` on the user's images: streamed one at a time, pixel cap, EXIF orientation,
16-bit scaling, file names kept (images.json), score filter before masks reach image size."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import compress.stages.predict as predict_module
from compress.cli import main
from compress.stages.predict import LabelInfo
from compress.evaluate.runtimes.pipeline import Placement, from_canvas


class _Recorder:
    """A fake model: records the images it is given; `on_call` runs before each answer."""

    def __init__(self, on_call=None):
        self.seen: list[torch.Tensor] = []
        self.on_call = on_call

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(image.clone())
        if self.on_call:
            self.on_call(len(self.seen))
        return {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([1]),
                "scores": torch.tensor([0.9])}


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(predict_module, "load_predictor",
                        lambda *args, **kwargs: (recorder, LabelInfo("detection")))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used: the predictor is faked")
    return model, recorder


def _predict(model: Path, images: Path, out: Path) -> int:
    return main(["predict", str(model), str(images), "--out", str(out)])


def test_images_are_read_one_at_a_time(tmp_path, fake_model):
    model, recorder = fake_model
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(pictures / "a.png")
    Image.new("RGB", (16, 16), (255, 0, 0)).save(pictures / "b.png")
    # while the first image is predicted the second changes on disk: a streaming predict sees it
    recorder.on_call = lambda n: n == 1 and Image.new("RGB", (16, 16), (0, 0, 255)).save(
        pictures / "b.png")
    assert _predict(model, pictures, tmp_path / "out") == 0
    assert recorder.seen[1][2].mean().item() == pytest.approx(1.0)  # blue: read after image 1


def test_images_json_names_the_users_files(tmp_path, fake_model):
    model, _ = fake_model
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name in ("holiday 1.jpg", "b.png"):
        Image.new("RGB", (20, 10), (10, 200, 10)).save(pictures / name)
    assert _predict(model, pictures, tmp_path / "out") == 0
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert isinstance(detections, list) and len(detections) == 2
    images = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    by_id = {image["id"]: image for image in images}
    assert sorted(image["file_name"] for image in images) == ["b.png", "holiday 1.jpg"]
    assert {d["image_id"] for d in detections} == set(by_id)
    assert all(d["file_name"] == by_id[d["image_id"]]["file_name"] for d in detections)
    assert all((tmp_path / "out" / image["drawn"]).is_file() for image in images)
    assert {(image["width"], image["height"]) for image in images} == {(20, 10)}


def test_exif_orientation_is_applied(tmp_path, fake_model):
    model, recorder = fake_model
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (200, 200, 200)).save(tmp_path / "phone.jpg", exif=exif)
    assert _predict(model, tmp_path / "phone.jpg", tmp_path / "out") == 0
    assert tuple(recorder.seen[0].shape) == (3, 40, 20)


def test_16_bit_png_is_scaled_not_clipped(tmp_path, fake_model):
    model, recorder = fake_model
    grey = np.full((8, 8), 40000, dtype=np.uint16)
    grey[0, 0] = 1000
    Image.fromarray(grey).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode.startswith("I")
    assert _predict(model, tmp_path / "scan.png", tmp_path / "out") == 0
    seen = recorder.seen[0]
    assert seen[:, 1, 1].tolist() == pytest.approx([40000 / 65535] * 3, abs=1e-6)
    assert seen[0, 0, 0].item() == pytest.approx(1000 / 65535, abs=1e-6)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height (8-bit RGB) with one tiny IDAT: Pillow reads the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [30000, 14000])
def test_huge_image_exits_2_in_one_line(tmp_path, fake_model, capsys, side):
    model, recorder = fake_model
    _png_header_only(tmp_path / "huge.png", side, side)
    assert _predict(model, tmp_path / "huge.png", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "huge.png" in err and "pixels" in err
    assert not recorder.seen


def count_upsampled(monkeypatch) -> list[int]:
    """The batch size of every torch.nn.functional.interpolate call, in order."""
    upsampled: list[int] = []
    interpolate = torch.nn.functional.interpolate

    def counting(tensor, *args, **kwargs):
        upsampled.append(int(tensor.shape[0]))
        return interpolate(tensor, *args, **kwargs)
    monkeypatch.setattr(torch.nn.functional, "interpolate", counting)
    return upsampled


def test_from_canvas_filters_before_upsampling_masks(monkeypatch):
    upsampled = count_upsampled(monkeypatch)
    outputs = {"boxes": np.array([[0, 0, 8, 8], [1, 1, 9, 9], [2, 2, 4, 4]], np.float32),
               "scores": np.array([0.9, 0.1, 0.6], np.float32),
               "labels": np.array([1, 2, 1], np.int64),
               "masks": np.random.default_rng(0).random((3, 1, 16, 16)).astype(np.float32)}
    out = from_canvas(outputs, Placement(0.25, 16, 16, (64, 64)), score_threshold=0.5)
    assert upsampled == [2]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.6])
    assert tuple(out["masks"].shape) == (2, 1, 64, 64)
    assert out["labels"].tolist() == [1, 1]


def test_huge_image_is_predicted_shrunk_and_mapped_back(tmp_path, fake_model, monkeypatch):
    model, recorder = fake_model
    monkeypatch.setattr("compress.stages.images.WORK_MAX_PIXELS", 32 * 16)
    Image.new("RGB", (128, 64), (0, 90, 0)).save(tmp_path / "wide.png")
    assert _predict(model, tmp_path / "wide.png", tmp_path / "out") == 0
    assert tuple(recorder.seen[0].shape) == (3, 16, 32)
    detection, = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert detection["bbox"] == pytest.approx([4.0, 4.0, 16.0, 16.0])  # [1, 1, 5, 5] x 4


def test_masks_of_a_huge_image_come_back_at_its_size(tmp_path, monkeypatch):
    def model(image: torch.Tensor) -> dict[str, torch.Tensor]:
        masks = torch.zeros(2, 1, *image.shape[-2:])
        masks[0, 0, :, : image.shape[-1] // 2] = 1.0  # left half
        return {"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0], [2.0, 2.0, 4.0, 4.0]]),
                "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.8]), "masks": masks}
    monkeypatch.setattr(predict_module, "load_predictor",
                        lambda *args, **kwargs: (model, LabelInfo("segmentation")))
    monkeypatch.setattr("compress.stages.images.WORK_MAX_PIXELS", 32 * 16)
    (tmp_path / "model.onnx").write_bytes(b"faked")
    Image.new("RGB", (128, 64), (90, 90, 90)).save(tmp_path / "wide.png")
    assert _predict(tmp_path / "model.onnx", tmp_path / "wide.png", tmp_path / "out") == 0
    first, second = json.loads((tmp_path / "out" / "detections.json").read_text())
    from pycocotools import mask as mask_utils
    assert first["segmentation"]["size"] == [64, 128]
    assert mask_utils.area(first["segmentation"]) == 64 * 64
    assert mask_utils.area(second["segmentation"]) == 0
    drawn = np.asarray(Image.open(tmp_path / "out" / "wide.png"))
    assert drawn.shape[:2] == (256, 512)  # small images are drawn enlarged 4x
    assert (drawn[160, 80] != 90).any() and (drawn[160, 400] == 90).all()


def test_a_large_image_is_drawn_full_size(tmp_path, fake_model):
    model, _ = fake_model
    Image.new("RGB", (600, 300), (90, 90, 90)).save(tmp_path / "big.png")
    assert _predict(model, tmp_path / "big.png", tmp_path / "out") == 0
    drawn = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    assert drawn.shape == (300, 600, 3) and (drawn[3, 3] != 90).any() and (drawn[200, 400] == 90).all()


def test_fixed_size_graph_filters_before_upsampling_masks(monkeypatch):
    from compress.stages.predictors import fit_to_graph

    def detector(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 3), "scores": torch.tensor([0.9, 0.1, 0.2]),
                "labels": torch.tensor([1, 2, 3]), "masks": torch.rand(3, 1, 128, 256)}
    upsampled = count_upsampled(monkeypatch)
    out = fit_to_graph(detector, [3, 128, 256], score_threshold=0.5)(torch.rand(3, 64, 64))
    assert upsampled == [1, 1]  # the image to the graph's size, then the one kept mask back
    assert out["labels"].tolist() == [1] and tuple(out["masks"].shape) == (1, 1, 64, 64)


def test_torch_model_pastes_only_the_kept_masks(monkeypatch):
    import torchvision.models.detection.transform as transform
    from compress.stages.predictors import _filtered_forward
    from support.onnx_models import pruned_tiny

    model, _ = pruned_tiny("maskrcnn")
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        everything = model([image])[0]
    threshold = float(everything["scores"].median())
    pasted: list[int] = []
    paste = transform.paste_masks_in_image

    def counting(masks, *args, **kwargs):
        pasted.append(int(masks.shape[0]))
        return paste(masks, *args, **kwargs)
    monkeypatch.setattr(transform, "paste_masks_in_image", counting)
    with torch.no_grad():
        kept = _filtered_forward(model, image, threshold)
    wanted = everything["scores"] >= threshold
    assert pasted == [int(wanted.sum())] and 0 < pasted[0] < len(everything["scores"])
    assert torch.allclose(kept["boxes"], everything["boxes"][wanted])
    assert torch.allclose(kept["masks"], everything["masks"][wanted])


@pytest.mark.parametrize("seed", range(4))
def test_rle_of_a_full_size_mask_equals_pycocotools(seed):
    from pycocotools import mask as mask_utils
    from compress.stages.upscale import rle

    rng = np.random.default_rng(seed)
    binary = np.asfortranarray((rng.random((13, 17)) < [0.0, 0.3, 0.7, 1.0][seed]).astype(np.uint8))
    reference = mask_utils.encode(binary)
    assert rle(binary) == {"size": [13, 17], "counts": reference["counts"].decode()}
