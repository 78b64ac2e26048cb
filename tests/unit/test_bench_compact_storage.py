"""The compact-storage benchmark compares like with like: the mask coder with the mask entropy,
the whole archive with xz -9 (and zstd -19 where a module exists) of the same ONNX file."""
from __future__ import annotations

import importlib.util
import lzma
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_compact_storage",
                                                  ROOT / "benchmarks" / "bench_compact_storage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_random_row_reports_entropy_and_xz(bench, tmp_path, sparsity):
    row = bench.random_row(50_000, sparsity, tmp_path)
    s = row["sparsity"]
    h = -(s * math.log2(s) + (1 - s) * math.log2(1 - s))
    assert row["mask_entropy_bytes"] == pytest.approx(50_000 * h / 8)
    assert 0.97 < row["mask_over_entropy"] < 1.05  # the Rice coder sits at the entropy
    data = (tmp_path / f"random_{sparsity}.onnx").read_bytes()
    assert row["xz9_bytes"] == len(lzma.compress(data, preset=9))
    assert row["compact_over_xz9"] == pytest.approx(row["compact_bytes"] / row["xz9_bytes"])
    assert row["compact_over_xz9"] < 1.0  # the archive beats xz -9 on a sparse tensor
    assert not any("bound" in key for key in row)  # no bound that assumes incompressible values


def test_zstd_reported_only_with_a_module(bench, monkeypatch):
    module, _ = bench.zstd_compressor()
    row = bench.general_purpose(bytes(1000), 100)
    assert row["zstd_module"] == module
    assert (row["zstd19_bytes"] is None) == (module is None)
    monkeypatch.setattr(bench, "zstd_compressor", lambda: (None, None))
    row = bench.general_purpose(bytes(1000), 100)
    assert row["zstd19_bytes"] is None and row["compact_over_zstd19"] is None
    assert row["xz9_bytes"] == len(lzma.compress(bytes(1000), preset=9))
