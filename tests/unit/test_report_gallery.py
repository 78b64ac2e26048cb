"""The report's gallery (compress/report/gallery.py): the run's first validation images, one row
each, every model's predictions side by side; a missing checkpoint is a Missing section note."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from compress.recipe.load import load_recipe
from compress.report import gallery
from compress.report.page import Missing
from compress.run.setup import prepare_data

RECIPE = ("name: g\nmodel: {arch: maskrcnn, backbone: tiny}\n"
          "data: {synthetic: {train_images: 1, val_images: 4, image_size: 64}}\n")
DETECTION = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([1]),
             "scores": torch.tensor([0.9])}
NOTHING = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
           "scores": torch.zeros(0)}


@pytest.fixture()
def run_root(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    root.mkdir()
    (root / "recipe.yaml").write_text(RECIPE)
    prepare_data(load_recipe(root / "recipe.yaml"), root / "data")
    for name in ("dense.pt", "ticket.pt"):
        (root / name).write_bytes(b"")
    return root


def test_gallery_rows_are_the_first_validation_images_each_model_side_by_side(run_root, tmp_path,
                                                                               monkeypatch):
    outputs = {"dense.pt": NOTHING, "ticket.pt": DETECTION}
    seen: list[tuple[str, tuple[int, ...]]] = []

    def fake_model(path: Path):
        def predict(images: list[torch.Tensor]) -> list[dict]:
            seen.append((path.name, tuple(images[0].shape)))
            return [outputs[path.name]]
        return predict

    monkeypatch.setattr(gallery, "_torch_model", fake_model)
    models = [("dense", run_root / "dense.pt"), ("ticket", run_root / "ticket.pt")]
    out, caption = gallery.gallery_image(run_root, models, tmp_path / "g.png", n_images=3)
    assert caption == ("3 validation image(s); the best 10 detections scoring >= 0.3 by dense "
                       "and ticket")
    assert seen == [(m, (3, 64, 64)) for _ in range(3) for m in ("dense.pt", "ticket.pt")]
    info = gallery.run_label_info(run_root)
    first = min(info.image_ids, key=info.image_ids.get)
    row = gallery.side_by_side(
        [gallery.draw_detections(gallery._read_rgb(info.image_dir / first), o,
                                 class_names=info.class_names, score_threshold=0.3,
                                 min_side_px=320, max_shown=10) for o in (NOTHING, DETECTION)],
        [f"dense: {first}", f"ticket: {first}"])
    with Image.open(out) as sheet:
        assert sheet.size == (row.width, 3 * (row.height + gallery.ROW_GAP_PX))
        top = sheet.convert("RGB").crop((0, 0, row.width, row.height))
        assert top.tobytes() == row.tobytes()  # row 1: the lowest image id, dense then ticket


def test_gallery_missing_checkpoint_is_a_missing_note(run_root, tmp_path):
    with pytest.raises(Missing, match="is missing"):
        gallery.gallery_image(run_root, [("ticket", run_root / "none.pt")], tmp_path / "g.png")
