"""Files written atomically get the user's umask (0o644 under 022), not mkstemp's 0o600."""
from __future__ import annotations

import os
import stat

import pytest

from compress.core import atomic


@pytest.fixture
def umask_022(monkeypatch):
    old = os.umask(0o022)
    monkeypatch.setattr(atomic, "_UMASK", None)  # read it again under the test's umask
    yield
    os.umask(old)
    atomic._UMASK = None


@pytest.mark.parametrize("write", [
    lambda p: atomic.write_text(p, "x"), lambda p: atomic.write_bytes(p, b"x"),
    lambda p: atomic.write_json(p, {"a": 1}), lambda p: atomic.torch_save(p, {"a": 1})])
def test_written_file_mode_follows_umask_022(tmp_path, umask_022, write):
    path = tmp_path / "out" / "f"
    write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_umask_077_keeps_files_private(tmp_path, monkeypatch):
    old = os.umask(0o077)
    monkeypatch.setattr(atomic, "_UMASK", None)
    try:
        atomic.write_text(tmp_path / "f", "x")
    finally:
        os.umask(old)
        atomic._UMASK = None
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
