"""A DeepSparse child dies with the process that started it, and its work folder goes with it.

DeepSparse compiles in C for minutes without returning to Python, so neither a signal handler nor
a thread in the child can be relied on to notice that the parent is gone (a SIGKILLed toolkit
left its child running for 2-27 s and its /dev/shm buffers, 49 MB, behind for good). Instead the
child, before it imports deepsparse, starts a watcher: a tiny detached process (double fork, no
inherited file descriptors, so the parent's pipes still close when the child dies) that waits on
a pidfd of the parent. When the parent ends, the watcher SIGKILLs the child (through a pidfd of
the child: no pid-reuse race) and removes the work folder. It exits by itself once the folder is
gone (the parent cleaned up as usual). Linux only (pidfd, Python >= 3.9); elsewhere a no-op.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
from pathlib import Path

log = logging.getLogger(__name__)
POLL_S = 0.5


def watch_parent(parent_pid: int, folder: str | os.PathLike) -> bool:
    """Start the watcher for this (child) process; False where it cannot run."""
    if not hasattr(os, "pidfd_open") or not hasattr(os, "fork"):
        return False
    child = os.getpid()
    try:
        child_fd = os.pidfd_open(child)
        first = os.fork()
    except OSError as err:
        log.warning("no watcher for the DeepSparse child: %s", err)
        return False
    if first:
        os.close(child_fd)
        os.waitpid(first, 0)  # the intermediate process exits at once: no zombie is left
        return True
    try:
        if os.fork():
            os._exit(0)
        _detach(keep=child_fd)
        _watch(parent_pid, child_fd, Path(folder))
    finally:
        os._exit(0)


def _detach(keep: int) -> None:
    """Drop every inherited descriptor but `keep` (stdin/out/err -> /dev/null) and ignore the
    terminal's signals: Ctrl-C must not take the watcher down before the cleanup."""
    os.setsid()
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _watch(parent_pid: int, child_fd: int, folder: Path) -> None:
    """Until the folder is gone (the parent cleaned up): when the parent ends, clean up for it."""
    try:
        parent_fd: int | None = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        parent_fd = None  # gone before the watcher started
    while parent_fd is not None:
        if not folder.exists():
            return
        if select.select([parent_fd], [], [], POLL_S)[0]:
            break
    _kill_and_clean(child_fd, folder)


def _kill_and_clean(child_fd: int, folder: Path) -> None:
    try:
        signal.pidfd_send_signal(child_fd, signal.SIGKILL)
    except (ProcessLookupError, OSError):
        pass  # the child ended already
    shutil.rmtree(folder, ignore_errors=True)
