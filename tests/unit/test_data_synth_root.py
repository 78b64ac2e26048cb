"""Synthetic data is never written into a user's folder, and `data synth` output is a COCO root."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from compress.core.errors import DataError
from compress.data.loaders import build_dataset, collate_fn, make_loader
from compress.data.synth import write_synthetic, write_synthetic_splits
from compress.data.synth_marker import MARKER
from compress.recipe.load import load_recipe
from compress.run import setup as rs

RECIPE = """\
name: t
model: {arch: maskrcnn, backbone: tiny}
data:
  dataset: synthetic
  root: ROOT
  synthetic: {train_images: 4, val_images: 2, image_size: 64}
train: {iterations: 2, epochs: null, batch_size: 2}
lottery: {rounds: 1, rewind: 1it}
"""


def _recipe(tmp_path: Path, root: Path, extra: list[str] = ()):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("ROOT", str(root)))
    return load_recipe(path, overrides=list(extra))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _users_folder(tmp_path: Path) -> Path:
    """A user's own small dataset, laid out where the generator would write."""
    root = tmp_path / "mine"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for i in (1, 2):
            (root / split / f"{i:06d}.png").write_bytes(b"user image %d" % i)
    (root / "notes.txt").write_text("my data\n")
    return root


def test_users_folder_as_synthetic_root_is_refused_and_stays_byte_identical(tmp_path):
    root = _users_folder(tmp_path)
    before = _digest(root)
    recipe = _recipe(tmp_path, root)
    with pytest.raises(DataError, match=r"data\.root: .*did not generate .*never written"):
        rs.train_images_known(recipe)  # before the run folder is claimed
    with pytest.raises(DataError, match="data.root"):
        rs.prepare_data(recipe, tmp_path / "run" / "data")
    assert _digest(root) == before
    assert not (tmp_path / "run").exists()


def test_empty_root_is_generated_then_reused_unchanged(tmp_path):
    root = tmp_path / "gen"
    root.mkdir()
    recipe = _recipe(tmp_path, root)
    assert rs.train_images_known(recipe) == 4
    data = rs.prepare_data(recipe, tmp_path / "run" / "data")
    assert (root / MARKER).is_file() and len(data.train) == 4 and len(data.val) == 2
    assert not (tmp_path / "run").exists()
    first = {k: (root / k).stat().st_mtime_ns for k in _digest(root)}
    rs.prepare_data(recipe, tmp_path / "run" / "data")
    assert {k: (root / k).stat().st_mtime_ns for k in _digest(root)} == first


def test_marked_set_with_other_settings_is_refused_not_regenerated(tmp_path):
    root = tmp_path / "gen"
    rs.prepare_data(_recipe(tmp_path, root), tmp_path / "run" / "data")
    before = _digest(root)
    other = _recipe(tmp_path, root, ["data.synthetic.train_images=6"])
    with pytest.raises(DataError, match=r"other settings \(train: .*images 4"):
        rs.prepare_data(other, tmp_path / "run" / "data")
    assert _digest(root) == before


def test_data_synth_refuses_a_users_folder(tmp_path):
    root = _users_folder(tmp_path)
    before = _digest(root)
    with pytest.raises(DataError, match="--out: .*did not generate"):
        write_synthetic(root, "detection", 2, image_size=64)
    assert _digest(root) == before


@pytest.mark.parametrize("task, arch_file", [("segmentation", "instances"),
                                             ("keypoints", "person_keypoints")])
def test_synth_output_is_a_coco_root(tmp_path, task, arch_file):
    write_synthetic(tmp_path / "d", task, 4, seed=1, image_size=64, split="train")
    write_synthetic(tmp_path / "d", task, 2, seed=2, image_size=64, split="val")
    assert (tmp_path / "d" / "annotations" / f"{arch_file}_train.json").is_file()
    train = build_dataset("coco", tmp_path / "d", "train", task, train=True)
    val = build_dataset("coco", tmp_path / "d", "val", task, train=False)
    assert (len(train), len(val)) == (4, 2)
    images, targets = next(iter(make_loader(train, 2, shuffle=True, seed=0, num_workers=0)))
    assert len(images) == 2 and images[0].shape == (3, 64, 64) and images[0].dtype == torch.float32
    assert all(t["boxes"].shape[1] == 4 and len(t["labels"]) >= 1 for t in targets)
    key = "masks" if task == "segmentation" else "keypoints"
    assert all(key in t for t in targets) and collate_fn([]) == ([], [])


def test_synth_splits_as_coco_root_train_a_step(tmp_path):
    write_synthetic_splits(tmp_path / "d", "segmentation", 4, 2, image_size=64)
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("dataset: synthetic", "dataset: coco").replace(
        "root: ROOT", f"root: {tmp_path / 'd'}\n  train_split: train\n  val_split: val"))
    recipe = load_recipe(path)
    data = rs.prepare_data(recipe, tmp_path / "run" / "data")
    model = rs.model_factory(recipe, data)()
    model.train()
    images, targets = next(iter(make_loader(data.train, 2, shuffle=True, seed=0, num_workers=0)))
    loss = sum(model(images, targets).values())
    loss.backward()
    assert torch.isfinite(loss)


def test_data_synth_cli_writes_a_whole_coco_root_by_default(tmp_path, capsys):
    """One `compress data synth --out D`: train and val, each under the names the COCO loader
    reads; the line printed says how to use it."""
    from compress.cli import main

    out = tmp_path / "root"
    assert main(["-q", "data", "synth", "--out", str(out), "--images", "8", "--image-size", "64"]) == 0
    for split, count in (("train", 8), ("val", 2)):
        assert (out / "annotations" / f"instances_{split}.json").is_file()
        assert len(list((out / split).glob("*"))) == count
    assert "data.dataset: coco" in capsys.readouterr().out
