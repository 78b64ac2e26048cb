"""The DeepSparse child's watcher guards the child's own parent: its pidfd is opened in the child,
before any fork, and checked against os.getppid(); a pid that is not the parent (it died and the
pid may be reused) is never watched: the folder goes and the child exits at once."""
from __future__ import annotations

import os

import pytest

from compress.evaluate.runtimes import child_watch

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux pidfd needed")


def _no_fork():
    raise AssertionError("forked a watcher for a process that is not the parent")


def test_a_pid_that_is_not_the_parent_is_never_watched(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.setattr(os, "fork", _no_fork)
    with pytest.raises(SystemExit) as caught:
        child_watch.watch_parent(os.getpid(), folder)  # alive, but not this process's parent
    assert caught.value.code == 1
    assert not folder.exists()


def test_the_parents_pidfd_is_opened_before_the_fork(tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    opened: list[int] = []
    real_open = os.pidfd_open

    def pidfd_open(pid, *args):
        fd = real_open(pid, *args)
        calls.append(("pidfd_open", pid))
        opened.append(fd)
        return fd

    def fork():
        calls.append(("fork", 0))
        raise OSError("no fork in this test")

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    monkeypatch.setattr(os, "fork", fork)
    assert child_watch.watch_parent(os.getppid(), tmp_path) is False
    assert calls.index(("pidfd_open", os.getppid())) < calls.index(("fork", 0))
    for fd in opened:  # nothing leaked when no watcher could start
        with pytest.raises(OSError):
            os.fstat(fd)
