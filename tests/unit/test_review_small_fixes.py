"""Small review fixes: a wrong-shape checkpoint names its key, the lottery tags its warnings through
the validated check names, one duration format for every progress line."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import compress.run.loaded as loaded
from compress.core.checkpoint import save_checkpoint
from compress.core.checks_names import CHECKS, tag
from compress.core.durations import format_duration
from compress.core.errors import ModelFileError
from compress.run import checks
from support.recipes import ROOT

PROJECT = Path(__file__).resolve().parents[2]


def _run_folder(tmp_path: Path, state: dict) -> Path:
    run = tmp_path / "run"
    (run / "rounds").mkdir(parents=True)
    shutil.copy(ROOT / "recipes" / "maskrcnn_lth.yaml", run / "recipe.yaml")
    (run / "summary.json").write_text('{"num_classes": 3}')
    save_checkpoint(run / "ticket.pt", model=state, mask={})
    return run


def test_load_model_of_a_wrong_shape_checkpoint_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(loaded, "build_for_run", lambda recipe, n: nn.Linear(4, n))
    run = _run_folder(tmp_path, {"weight": torch.zeros(5, 4), "bias": torch.zeros(3)})
    with pytest.raises(ModelFileError) as err:
        loaded.load_model(run)
    assert err.value.key == "model.weight"
    assert "(5, 4) does not fit the recipe's maskrcnn" in str(err.value)
    assert "\n" not in str(err.value)


def test_load_model_of_a_fitting_checkpoint_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(loaded, "build_for_run", lambda recipe, n: nn.Linear(4, n))
    run = _run_folder(tmp_path, {"weight": torch.ones(3, 4), "bias": torch.zeros(3)})
    assert torch.equal(loaded.load_model(run).model.weight, torch.ones(3, 4))


def test_transfer_tags_its_warnings_through_the_validated_names():
    """No hand-written `extra={"check": ...}` in the lottery: `tag` refuses unknown names."""
    source = (PROJECT / "compress" / "lottery" / "transfer.py").read_text()
    assert '"check":' not in source and source.count('tag("partial_transfer")') == 2
    assert checks.tag is tag and checks.CHECKS is CHECKS
    with pytest.raises(ValueError, match="unknown check"):
        tag("partial_transfr")


def test_one_duration_formatter_for_rounds_and_profile():
    for name in ("runner.py", "profile.py"):
        tree = ast.parse((PROJECT / "compress" / "lottery" / name).read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                    and n.name == "_duration"], name
    assert [format_duration(s) for s in (0.2, 7, 65, 3600 * 2 + 600)] == [
        "0 s", "7 s", "1 min 05 s", "2 h 10 min"]
