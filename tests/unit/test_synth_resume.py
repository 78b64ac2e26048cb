"""A run killed while its synthetic data is generated resumes: the marker says "in progress"
before the first image, an in-progress set is regenerated, the run folder's own `data/` is never
refused, and a refusal names the key the user gave."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import compress.data.synth as synth
from compress.core.errors import DataError
from compress.data.loaders import annotation_file
from compress.data.synth import write_synthetic, write_synthetic_splits
from compress.data.synth_marker import MARKER, folder_state
from compress.recipe.load import load_recipe
from compress.run import setup as rs

RECIPE = """\
name: t
model: {arch: maskrcnn, backbone: tiny}
data:
  dataset: synthetic
ROOT  synthetic: {train_images: 4, val_images: 2, image_size: 64}
train: {iterations: 2, epochs: null, batch_size: 2}
lottery: {rounds: 1, rewind: 1it}
"""


def _recipe(tmp_path: Path, root: Path | None):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("ROOT", f"  root: {root}\n" if root else ""))
    return load_recipe(path)


def _killed_after(monkeypatch, images: int) -> None:
    """The next generation dies (as a killed process would) after `images` images."""
    real, drawn = synth._png_bytes, []

    def dying(image):
        if len(drawn) == images:
            raise KeyboardInterrupt
        drawn.append(1)
        return real(image)
    monkeypatch.setattr(synth, "_png_bytes", dying)


@pytest.mark.parametrize("user_root", [True, False])
def test_generation_killed_midway_is_regenerated_on_resume(tmp_path, monkeypatch, user_root):
    root = tmp_path / ("mine" if user_root else "run/data")
    recipe = _recipe(tmp_path, root if user_root else None)
    _killed_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        rs.prepare_data(recipe, tmp_path / "run" / "data")
    assert len(list((root / "train").glob("*.png"))) == 2
    assert folder_state(root, rs.synthetic_settings("segmentation", recipe.data)) == "partial"
    monkeypatch.undo()
    assert rs.train_images_known(recipe) == 4  # not refused before the run folder is claimed
    data = rs.prepare_data(recipe, tmp_path / "run" / "data")
    assert (len(data.train), len(data.val)) == (4, 2)
    assert folder_state(root, rs.synthetic_settings("segmentation", recipe.data)) == "ready"
    assert "in_progress" not in json.loads((root / MARKER).read_text())


def test_data_synth_killed_midway_runs_again(tmp_path, monkeypatch):
    _killed_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_splits(tmp_path / "d", "detection", 3, 1, image_size=64)
    monkeypatch.undo()
    paths = write_synthetic_splits(tmp_path / "d", "detection", 3, 1, image_size=64)
    assert paths["val"] == annotation_file("coco", tmp_path / "d", "val", "detection")


def test_run_folder_made_before_the_marker_resumes(tmp_path):
    """An older run's own data/: images and annotations/val.json, no marker."""
    data_dir = tmp_path / "run" / "data"
    (data_dir / "train").mkdir(parents=True)
    (data_dir / "train" / "000001.png").write_bytes(b"old")
    (data_dir / "annotations").mkdir()
    (data_dir / "annotations" / "val.json").write_text("{}")
    data = rs.prepare_data(_recipe(tmp_path, None), data_dir)
    assert (len(data.train), len(data.val)) == (4, 2) and (data_dir / MARKER).is_file()


def test_a_users_folder_is_refused_under_the_key_given(tmp_path):
    root = tmp_path / "mine"
    (root / "train").mkdir(parents=True)
    (root / "train" / "000001.png").write_bytes(b"user image")
    with pytest.raises(DataError, match=r"^data\.root: .*did not generate") as err:
        write_synthetic_splits(root, "detection", 2, 1, image_size=64, key="data.root")
    assert err.value.key == "data.root"
    with pytest.raises(DataError, match=r"^--out: "):
        write_synthetic(root, "detection", 2, image_size=64)
    assert sorted(p.name for p in root.rglob("*")) == ["000001.png", "train"]


def test_one_annotation_naming_rule():
    assert not hasattr(synth, "annotation_path")
    assert annotation_file("synthetic", "r", "val", "keypoints") == Path(
        "r/annotations/person_keypoints_val.json")
