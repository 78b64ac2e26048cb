"""Atomic file writes: write to a temp file in the same folder, fsync, then rename.

A killed process leaves either the old file or the new one, never half of one. The file gets
the mode a plain `open()` would give it (0o666 less the umask), not mkstemp's private 0o600.
Temp files are named `.NAME.lth~XXXXXXXX.tmp` (`temp_beside`): the marker lets a resume remove
what a killed writer left (`is_own_temp`) without touching a user's own `*.tmp` files.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from compress.core.errors import UserError

_UMASK: int | None = None
TEMP_MARK = "lth~"
_OWN_TEMP = re.compile(r"^\..+\." + re.escape(TEMP_MARK) + r"[A-Za-z0-9_]{8}\.tmp$")


def temp_beside(path: str | os.PathLike) -> tuple[int, str]:
    """`mkstemp` in `path`'s folder with the toolkit's temp name; returns (fd, temp path)."""
    path = Path(path)
    return tempfile.mkstemp(prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp", dir=path.parent)


def is_own_temp(name: str) -> bool:
    """Whether a file name is one `temp_beside` makes (`.NAME.lth~XXXXXXXX.tmp`)."""
    return bool(_OWN_TEMP.match(name))


def process_umask() -> int:
    """The process umask, read once (from /proc where it can be; `os.umask` sets it to read it)."""
    global _UMASK
    if _UMASK is None:
        try:
            status = Path("/proc/self/status").read_text()
            _UMASK = next(int(line.split()[1], 8) for line in status.splitlines()
                          if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def make_folder(folder: str | os.PathLike) -> Path:
    """`mkdir -p folder`; a file in the way is a one-line UserError naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise UserError(f"cannot create the folder: {blocker} is a file; expected a folder "
                        "(or a path that does not exist yet)", file=str(folder)) from err
    return folder


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on clean exit, fsync and rename it over `path`."""
    path = Path(path)
    make_folder(path.parent)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~process_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """`torch.save` through a temp file and rename."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
