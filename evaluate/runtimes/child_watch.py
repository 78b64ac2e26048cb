"""A DeepSparse child dies with the process that started it, and its work folder goes with it.

DeepSparse compiles in C for minutes without returning to Python, so neither a signal handler nor
a thread in the child can be relied on to notice that the parent is gone (a SIGKILLed toolkit
left its child running for 2-27 s and its /dev/shm buffers, 49 MB, behind for good). Instead the
child, before it imports deepsparse, starts a watcher: a tiny detached process (double fork, no
inherited file descriptors, so the parent's pipes still close when the child dies) that waits on
a pidfd of the parent. That pidfd is opened in the child before any fork and checked to be its
own parent's (`os.getppid()`): a parent that died early, its pid reused, is never mistaken for
it (the child then removes the folder and exits at once). When the parent ends, the watcher
SIGKILLs the child (through a pidfd of the child: no pid-reuse race) and removes the work
folder. It exits by itself once the folder is gone (the parent cleaned up as usual). Linux only
(pidfd, Python >= 3.9); elsewhere a no-op.
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
    """Start the watcher for this (child) process; False where it cannot run. When `parent_pid`
    is no longer this process's parent (it died already), the folder is removed and the child
    exits at once (SystemExit 1)."""
    if not hasattr(os, "pidfd_open") or not hasattr(os, "fork"):
        return False
    try:
        parent_fd = _parent_fd(parent_pid)
    except OSError as err:
        log.warning("no watcher for the DeepSparse child: %s", err)
        return False
    if parent_fd is None:
        shutil.rmtree(folder, ignore_errors=True)
        raise SystemExit(1)
    child_fd = -1
    try:
        child_fd = os.pidfd_open(os.getpid())
        first = os.fork()
    except OSError as err:
        for fd in (parent_fd, child_fd):
            if fd >= 0:
                os.close(fd)
        log.warning("no watcher for the DeepSparse child: %s", err)
        return False
    if first:
        os.close(child_fd)
        os.close(parent_fd)
        os.waitpid(first, 0)  # the intermediate process exits at once: no zombie is left
        return True
    try:
        if os.fork():
            os._exit(0)
        _detach(keep=(child_fd, parent_fd))
        _watch(parent_fd, child_fd, Path(folder))
    finally:
        os._exit(0)


def _parent_fd(parent_pid: int) -> int | None:
    """A pidfd of this process's parent `parent_pid`; None when it is not the parent (any more).
    Opened first, checked after: if `getppid()` still names the pid, the fd is the parent's."""
    try:
        fd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        return None
    if os.getppid() != parent_pid:
        os.close(fd)
        return None
    return fd


def _detach(keep: tuple[int, ...]) -> None:
    """Drop every inherited descriptor but those in `keep` (stdin/out/err -> /dev/null) and ignore the
    terminal's signals: Ctrl-C must not take the watcher down before the cleanup."""
    os.setsid()
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _watch(parent_fd: int, child_fd: int, folder: Path) -> None:
    """Until the folder is gone (the parent cleaned up): when the parent ends, clean up for it."""
    while folder.exists():
        if select.select([parent_fd], [], [], POLL_S)[0]:
            _kill_and_clean(child_fd, folder)
            return


def _kill_and_clean(child_fd: int, folder: Path) -> None:
    try:
        signal.pidfd_send_signal(child_fd, signal.SIGKILL)
    except (ProcessLookupError, OSError):
        pass  # the child ended already
    shutil.rmtree(folder, ignore_errors=True)
