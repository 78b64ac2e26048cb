"""A run claims its folder: one writer at a time (flock), a user's folder is not taken over, and
stale-temp cleanup removes only the toolkit's own temp files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.recipes import NO_STAGES, ROOT, TINY, set_args, subprocess_env

import compress.run.pipeline as pipeline
from compress.cli import main
from compress.core.atomic import write_text
from compress.core.errors import UserError
from compress.recipe.load import load_recipe, resolved_yaml
from compress.core.folders import RunFolder

RECIPE = ROOT / "recipes" / "maskrcnn_lth.yaml"
OVERRIDES = TINY + NO_STAGES

HOLDER = """
import sys, time
from pathlib import Path
from compress.core.folders import RunFolder
RunFolder(Path(sys.argv[1])).lock()
print("locked", flush=True)
time.sleep(120)
"""


def _run_folder(root: Path) -> Path:
    """A run folder holding the resolved tiny smoke recipe (what `compress run` wrote first)."""
    (root / "rounds").mkdir(parents=True)
    write_text(root / "recipe.yaml", resolved_yaml(load_recipe(RECIPE, smoke=True, overrides=OVERRIDES)))
    return root


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_second_writer_on_a_running_folder_exits_2(tmp_path, capsys, monkeypatch):
    run = _run_folder(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True, env=subprocess_env(), cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"

        def must_not_train(*args, **kwargs):
            raise AssertionError("the second writer went on to train")
        monkeypatch.setattr(pipeline, "find_ticket", must_not_train)
        code = main(["run", str(RECIPE), "--smoke", "--out", str(run), "--resume", *set_args(OVERRIDES)])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"pid {holder.pid}" in err and str(run) in err


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_lock_is_free_again_when_the_holder_dies(tmp_path):
    run = _run_folder(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True, env=subprocess_env(), cwd=ROOT)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match="another process"):
        RunFolder(run).lock()
    holder.kill()
    holder.wait()
    RunFolder(run).lock()  # SIGKILL released it
    RunFolder(run).unlock()


def test_resume_cleanup_removes_only_the_toolkits_temps(tmp_path):
    run = _run_folder(tmp_path / "run")
    mine = ["rounds/round_0/.checkpoint.pt.lth~ab12cd34.tmp", ".summary.json.lth~zz99yy88.tmp",
            "export/.model.onnx.k2j4h6g8.tmp", ".ticket.pt.a1b2c3d4.tmp"]
    users = [".draft.tmp", "notes/.todo.tmp", "notes/.summary.json.a1b2c3d4.tmp", "x.tmp",
             "export/keep.tmp", ".mydata.a1b2c3d4.tmp"]
    for name in mine + users:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    (run / "eval" / "torch" / ".tide_q1w2e3").mkdir(parents=True)
    (run / "photos" / ".tide_mine").mkdir(parents=True)  # a user's folder that looks like scratch
    removed = RunFolder(run).remove_stale_temps()
    RunFolder(run).unlock()
    assert sorted(str(p.relative_to(run)) for p in removed) == sorted(mine + ["eval/torch/.tide_q1w2e3"])
    assert all((run / name).exists() for name in users) and (run / "photos" / ".tide_mine").is_dir()


@pytest.mark.parametrize("content", ["photo.jpg", "sub/thesis.tex"])
def test_a_users_non_empty_folder_is_refused_unless_asked(tmp_path, content):
    folder = tmp_path / "mine"
    (folder / content).parent.mkdir(parents=True)
    (folder / content).write_text("the user's")
    with pytest.raises(UserError, match="not empty.*holds no run"):
        RunFolder(folder).claim()
    RunFolder(folder).claim(allow_foreign=True)
    RunFolder(folder).unlock()
    assert (folder / content).read_text() == "the user's"


def test_new_empty_and_run_folders_are_claimed(tmp_path):
    for folder in (tmp_path / "new" / "run", tmp_path / "empty", _run_folder(tmp_path / "run")):
        folder.mkdir(parents=True, exist_ok=True) if folder.name == "empty" else None
        RunFolder(folder).claim()
        assert (folder / ".lock").is_file()
        RunFolder(folder).unlock()


def test_out_under_a_file_is_refused(tmp_path):
    (tmp_path / "report.pdf").write_text("a file")
    with pytest.raises(UserError, match="report.pdf is a file"):
        RunFolder(tmp_path / "report.pdf" / "run").claim()
