"""Hostile input: each is refused with one clear line and exit code 2, earlier outputs unchanged."""
from __future__ import annotations

import errno
import hashlib
import json
import pickle
import shutil
from pathlib import Path

from PIL import Image

from compress.cli import main
from support.recipes import NO_STAGES, ROOT, TINY, set_args

RECIPE = str(ROOT / "recipes" / "maskrcnn_lth.yaml")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_pickled_code_in_a_ticket_is_refused_and_never_runs(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "rounds").mkdir(parents=True)
    shutil.copy(RECIPE, run / "recipe.yaml")
    payload = _Payload()
    payload.target = str(tmp_path / "PWNED")
    (run / "ticket.pt").write_bytes(pickle.dumps({"model": payload}))
    assert main(["export", str(run)]) == 2
    err = _one_error_line(capsys)
    assert "ticket.pt" in err and "weights_only" in err
    assert not (tmp_path / "PWNED").exists()


def _coco_folder(root: Path, file_name: str, size: tuple[int, int] = (64, 64)) -> None:
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        ann = {"images": [{"id": 1, "file_name": file_name, "width": size[0], "height": size[1]}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20],
                                "area": 400, "iscrowd": 0,
                                "segmentation": [[1, 1, 21, 1, 21, 21, 1, 21]]}],
               "categories": [{"id": 1, "name": "box"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(ann))


def _run_coco(root: Path, out: Path) -> int:
    return main(["-q", "run", RECIPE, "--out", str(out), *set_args(
        [o for o in TINY if not o.startswith("data.synthetic")] + NO_STAGES
        + [f"data.root={root}", "data.num_workers=0", "train.amp=false"])])


def test_dataset_file_name_escaping_the_root_is_refused(tmp_path, capsys):
    (tmp_path / "secret.png").write_bytes(b"x")
    _coco_folder(tmp_path / "coco", "../../secret.png")
    assert _run_coco(tmp_path / "coco", tmp_path / "run") == 2
    assert "secret.png" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()  # the dataset is checked before anything is written


def test_absurd_image_size_is_refused(tmp_path, capsys):
    root = tmp_path / "coco"
    _coco_folder(root, "huge.png", size=(12000, 12000))
    for split in ("train2017", "val2017"):
        Image.new("1", (12000, 12000)).save(root / split / "huge.png")
    assert _run_coco(root, tmp_path / "run") == 2
    assert "pixels is refused" in _one_error_line(capsys)


def test_absurd_model_size_is_refused(tmp_path, capsys):
    assert main(["run", RECIPE, "--out", str(tmp_path / "r"), "--set", "model.min_size=100000"]) == 2
    assert "model.min_size" in _one_error_line(capsys)


def test_missing_data_root_says_where_and_mentions_smoke(tmp_path, capsys):
    assert main(["run", RECIPE, "--out", str(tmp_path / "r"), "--set", f"data.root={tmp_path}/nope"]) == 2
    err = _one_error_line(capsys)
    assert "nope" in err and "--smoke" in err


def _resume_round_1(run: Path) -> None:
    (run / "rounds" / "round_1" / "metrics.json").unlink()
    (run / "ticket.pt").unlink()


def test_nan_loss_stops_the_round_naming_the_step(tiny_lottery_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_lottery_run, run)
    _resume_round_1(run)
    before = _digest(run / "rounds" / "round_0")
    import compress.training.round as rt

    real = rt.train_one_epoch

    def poisoned(model, *args, **kwargs):
        next(p for p in model.parameters() if p.requires_grad).data.fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(rt, "train_one_epoch", poisoned)
    code = main(["-q", "run", RECIPE, "--smoke", "--out", str(run), "--resume", *set_args(TINY + NO_STAGES)])
    assert code == 2
    assert "non-finite loss at iteration" in _one_error_line(capsys)
    assert _digest(run / "rounds" / "round_0") == before


def test_no_space_left_is_one_line_and_keeps_files(tiny_lottery_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_lottery_run, run)
    _resume_round_1(run)
    before = _digest(run)
    import compress.core.atomic as atomic

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    code = main(["-q", "run", RECIPE, "--smoke", "--out", str(run), "--resume", *set_args(TINY + NO_STAGES)])
    assert code == 2
    assert "No space left on device" in _one_error_line(capsys)
    after = _digest(run)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [p for p in run.rglob("*.tmp")]
