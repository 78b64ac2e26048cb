"""A parent SIGKILLed while its DeepSparse child compiles: the child dies too and its work folder
(the server's /dev/shm/deepsparse_server_*, a one-shot child's deepsparse_* temp folder) is gone
within seconds. A stand-in `deepsparse` whose compile never ends in time plays DeepSparse."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SLOW_DEEPSPARSE = '''
import os, time


def compile_model(path, batch_size=None, num_cores=None, input_shapes=None):
    with open(os.environ["COMPILING_MARKER"], "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)  # "mid-compile" for longer than any test waits
'''

PARENTS = {
    "server": """
import sys
from compress.evaluate.runtimes.deepsparse_server import DeepSparseServer, EngineSpec
DeepSparseServer([EngineSpec("part/0", sys.argv[1], ((1, 3, 4, 4),), ((1, 3, 4, 4),))],
                 compile_timeout_s=300)
""",
    "one_shot": """
import sys
from compress.evaluate.runtimes.deepsparse import deepsparse_bench
deepsparse_bench(sys.argv[1], [[1, 3, 4, 4]], ["float32"], override_shapes=True, timeout_s=300)
""",
}


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _folders(kind: str, model: Path, temp: Path) -> list[Path]:
    if kind == "one_shot":
        return sorted(temp.glob("deepsparse_*"))
    return [p for p in Path("/dev/shm").glob("deepsparse_server_*")
            if (p / "request.json").is_file() and str(model) in (p / "request.json").read_text()]


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.slow  # a subprocess or an end-to-end run
@pytest.mark.skipif(not Path("/dev/shm").is_dir() or not hasattr(os, "pidfd_open"),
                    reason="Linux /dev/shm and pidfd needed")
@pytest.mark.parametrize("kind", sorted(PARENTS))
def test_parent_killed_mid_compile_leaves_no_child_and_no_folder(tmp_path, kind):
    package = tmp_path / "fake" / "deepsparse"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(SLOW_DEEPSPARSE)
    temp = tmp_path / "tmp"
    temp.mkdir()
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx")
    marker = tmp_path / "compiling.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package.parent), str(ROOT)]),
           "COMPILING_MARKER": str(marker), "TMPDIR": str(temp)}
    parent = subprocess.Popen([sys.executable, "-c", PARENTS[kind], str(model)], env=env, cwd=ROOT)
    child = None
    try:
        assert _wait(marker.is_file, 60), "the child never started compiling"
        child = int(marker.read_text())
        assert _folders(kind, model, temp), "no work folder while compiling"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait(lambda: _dead(child), 5), "the child outlived its parent"
        assert _wait(lambda: not _folders(kind, model, temp), 5), _folders(kind, model, temp)
    finally:
        parent.kill()
        parent.wait()
        if child is not None and not _dead(child):
            os.kill(child, signal.SIGKILL)
        for folder in _folders(kind, model, temp):
            shutil.rmtree(folder, ignore_errors=True)
