"""`compress run` claims its folder: a user's non-empty folder is refused (exit 2, nothing
written) unless --force; the claim takes the run folder's lock."""
from __future__ import annotations

import pytest

from compress.cli import main
from compress.run import pipeline


class Stop(Exception):
    pass


def test_run_into_a_users_folder_is_refused_and_untouched(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    code = main(["-q", "run", "recipes/maskrcnn_lth.yaml", "--smoke", "--out", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"


def test_force_claims_and_locks_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    seen = {}

    def stop(*args, **kwargs):
        seen["lock"] = (folder / ".lock").is_file() and (folder / "recipe.yaml").is_file()
        raise Stop

    monkeypatch.setattr(pipeline, "find_ticket", stop)
    with pytest.raises(Stop):
        pipeline.run_recipe("recipes/maskrcnn_lth.yaml", smoke=True, out=folder, force=True,
                            progress=False)
    assert seen == {"lock": True} and (folder / "notes.txt").read_text() == "keep me"
