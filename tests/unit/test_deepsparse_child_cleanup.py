"""The DeepSparse child process leaves no temporary folder behind (a stand-in `deepsparse` package
records what the child compiles, so this runs without DeepSparse or its licence)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from compress.evaluate.runtimes.deepsparse import deepsparse_bench

FAKE_DEEPSPARSE = '''
import numpy as np


class _Engine:
    fraction_of_supported_ops = 1.0
    num_cores = 1

    def run(self, inputs, val_inp=False):
        return [np.asarray(x) * 2 for x in inputs]


def compile_model(path, batch_size=None, num_cores=None, input_shapes=None):
    with open(path, "rb") as handle:
        assert handle.read() == b"not really onnx"
    with open(path, "ab") as handle:  # DeepSparse rewrites the file to override shapes
        handle.write(b" rewritten")
    return _Engine()
'''


@pytest.fixture()
def fake_engine(tmp_path, monkeypatch) -> Path:
    """A stand-in deepsparse for the parent (find_spec) and the child (PYTHONPATH); TMPDIR of
    both pointed at an empty folder, which is returned."""
    package = tmp_path / "fake" / "deepsparse"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_DEEPSPARSE)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(package.parent),
                                                      os.environ.get("PYTHONPATH", "")]))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def test_bench_child_leaves_no_temporary_folder(fake_engine, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx")
    row = deepsparse_bench(model, [[1, 3, 4, 4]], ["float32"], override_shapes=True, warmup=0,
                           iterations=1, timeout_s=120)
    assert row["status"] == "ok", row
    assert model.read_bytes() == b"not really onnx"  # the child compiled a copy
    assert list(fake_engine.iterdir()) == []
