"""The DeepSparse server child answers every failure, a request it cannot read included, with the
one protocol line `ERROR <type>: <reason>` and exit status 1, never a traceback."""
from __future__ import annotations

import os

import pytest

from compress.evaluate.runtimes import deepsparse_server


@pytest.fixture
def protocol_file(tmp_path, monkeypatch):
    """The child's protocol (its stdout) goes to a file; its stdout is left as it is."""
    path = tmp_path / "protocol.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    real_dup = os.dup
    monkeypatch.setattr(os, "dup", lambda _fd: real_dup(fd))
    monkeypatch.setattr(os, "dup2", lambda *_: None)
    monkeypatch.setenv("NM_DISABLE_ANALYTICS", "1")
    yield path
    os.close(fd)


@pytest.mark.parametrize("content, kind", [(None, "FileNotFoundError"),
                                           ("{not json", "JSONDecodeError")])
def test_an_unreadable_request_is_one_error_line(tmp_path, protocol_file, content, kind):
    request = tmp_path / "request.json"
    if content is not None:
        request.write_text(content)
    assert deepsparse_server._child_main([str(request)]) == 1
    lines = protocol_file.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR {kind}: ")
