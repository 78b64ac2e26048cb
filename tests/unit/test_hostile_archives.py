"""Crafted `.lthz` archives: each refused with one line and exit 2, nothing written, little memory.

The three archives from the field: a header claiming 2^40 weights (4 TiB of payload), a header that
is a zlib bomb (3 GiB of zeros in 3 MB), and a skeleton that is an lzma bomb (48 concatenated xz
streams of 64 MiB of zeros each) behind an otherwise consistent header.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from compress.cli import main
from compress.core.errors import ModelFileError
import compress.export.compact_unpack
from compress.export.compact import MAGIC, pack, unpack, unpack_to

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def header(original: int, skeleton_bytes: int, tensors=()) -> dict:
    return {"format": "lthz", "version": 1, "original_bytes": original, "sha256": "0" * 64,
            "skeleton_bytes": skeleton_bytes, "tensors": list(tensors)}


def archive(head: dict | bytes, body: bytes = b"", header_len: int | None = None) -> bytes:
    blob = head if isinstance(head, bytes) else zlib.compress(json.dumps(head).encode())
    size = len(blob) if header_len is None else header_len
    return MAGIC + struct.pack("<BI", 1, size) + blob + body


def zlib_bomb(mib: int) -> bytes:
    """A valid zlib stream of `mib` MiB of zeros: one flushed, self-contained deflate segment
    repeated, then the final block and the right Adler-32 (all zeros: a = 1, b = n mod 65521)."""
    comp = zlib.compressobj(9)
    head = comp.compress(bytes(MiB)) + comp.flush(zlib.Z_FULL_FLUSH)
    segment = comp.compress(bytes(MiB)) + comp.flush(zlib.Z_FULL_FLUSH)
    final = comp.flush()[:-4]
    adler = ((mib * MiB) % 65521) << 16 | 1
    return head + segment * (mib - 1) + final + struct.pack(">I", adler)


def lzma_bomb(streams: int, stream_mib: int = 64) -> bytes:
    one = lzma.compress(bytes(stream_mib * MiB), preset=1)
    return one * streams


def two_pow_40_weights() -> bytes:
    skeleton = lzma.compress(bytes(100))
    # all zeros, rice-coded: decoding would start with a 2^40-entry mask (1 TiB)
    zeros = {"name": "w", "numel": 2 ** 40, "at": 0, "blobs": [0, 0, 20], "form": "sparse",
             "mask": "rice", "minority": "nonzero", "k": 0, "minority_count": 0, "nonzero": 0,
             "values": "planes"}
    body = skeleton + struct.pack("<BI", 0, 0) * 4
    return archive(header(4 * 2 ** 40 + 100, len(skeleton), [zeros]), body)


def header_bomb() -> bytes:
    return archive(zlib_bomb(3072))


def skeleton_bomb() -> bytes:
    skeleton = lzma_bomb(48)
    return archive(header(MiB, len(skeleton)), skeleton)


HOSTILE = {"weights_2e40.lthz": two_pow_40_weights, "header_bomb.lthz": header_bomb,
           "skeleton_bomb.lthz": skeleton_bomb}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    for name, build in HOSTILE.items():
        (folder / name).write_bytes(build())
    return {name: folder / name for name in HOSTILE}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_cli_refuses_hostile_archive(hostile, name, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    start = time.perf_counter()
    assert main(["export", "--unpack", str(hostile[name]), "--out", str(out)]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and name in err, err
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file left


_PEAK = """
import sys, time
from compress.cli import main
import compress.stages.export
# this process's own high-water mark (kB); ru_maxrss would carry over the forking parent's size
peak = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print("imports", 0, peak(), 0.0)
for path in sys.argv[2:]:
    start = time.perf_counter()
    code = main(["export", "--unpack", path, "--out", sys.argv[1]])
    print(path, code, peak(), time.perf_counter() - start)
"""


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_hostile_archives_peak_memory(hostile, tmp_path):
    """All three refused in one fresh process: its peak RSS (torch imports included) stays under
    1.5 GiB, and no refusal raises the peak the imports set by more than 64 MiB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "m.onnx"),
                           *map(str, hostile.values())],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split() for line in done.stdout.splitlines() if len(line.split()) == 4]
    imports_mib = int(rows[0][2]) / 1024
    peaks = {Path(path).name: int(kib) / 1024 for path, _, kib, _ in rows[1:]}
    seconds = {Path(path).name: float(s) for path, _, _, s in rows[1:]}
    print(f"peak RSS MiB after imports {imports_mib:.0f}, after each refusal",
          {k: round(v) for k, v in peaks.items()}, "seconds", seconds)
    assert [code for _, code, _, _ in rows[1:]] == ["2"] * 3, done.stderr
    assert max(peaks.values()) < 1.5 * 1024 and max(peaks.values()) - imports_mib < 64, peaks
    assert max(seconds.values()) < 10
    assert not (tmp_path / "m.onnx").exists()


def _tensor(numel: int, blobs: list[int], **coding) -> dict:
    return {"name": "w", "numel": numel, "at": 0, "blobs": blobs,
            **(coding or {"form": "dense", "values": "planes"})}


def _consistent(tensor: dict, skeleton_raw: int = 64) -> bytes:
    skeleton = lzma.compress(bytes(skeleton_raw))
    head = header(skeleton_raw + 4 * tensor["numel"], len(skeleton), [tensor])
    return archive(head, skeleton + bytes(sum(tensor["blobs"])))


MALFORMED = {
    "header length past the file": archive(header(0, 0), header_len=2 ** 32 - 1),
    "header not an object": archive(zlib.compress(b"[1, 2]")),
    "deeply nested header": archive(zlib.compress(b"[" * 200000 + b"]" * 200000)),
    "header not zlib": archive(b"{not zlib}"),
    "original over 2 GiB": archive(header(2 ** 31 + 1, 0)),
    "numel beyond original": archive(header(2 ** 31, 0, [_tensor(2 ** 40, [20])])),
    "boolean numel": archive(header(8, 0, [_tensor(True, [20])])),
    "sizes do not add up to the file": archive(header(0, 0)) + b"extra",
    "unknown coding": _consistent(_tensor(4, [1], form="sparse", mask="huffman", values="planes")),
    "dense blob too large": _consistent(_tensor(4, [4 * (5 + 4) + 1])),
    "bitmask blob too large": _consistent(_tensor(
        1000, [1000, 20], form="sparse", mask="bitmask-zlib", nonzero=0, values="planes")),
    "rice count disagrees": _consistent(_tensor(
        1000, [10, 0, 20], form="sparse", mask="rice", minority="nonzero", k=0,
        minority_count=5, nonzero=0, values="planes")),
    "skeleton blob far larger than the skeleton": archive(header(10, 5000), bytes(5000)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_headers_refused_before_decoding(case, tmp_path):
    path = tmp_path / "bad.lthz"
    path.write_bytes(MALFORMED[case])
    with pytest.raises(ModelFileError) as info:
        unpack(path)
    assert "\n" not in str(info.value) and "bad.lthz" in str(info.value)


def test_consistent_header_with_garbage_blobs_is_refused(tmp_path):
    """Sizes all add up, so only decoding can tell: the error is still one line, exit 2."""
    path = tmp_path / "garbage.lthz"
    path.write_bytes(_consistent(_tensor(4, [36])))
    assert main(["export", "--unpack", str(path), "--out", str(tmp_path / "out.onnx")]) == 2
    assert not (tmp_path / "out.onnx").exists()


def test_large_skeleton_decodes_in_pieces(tmp_path):
    """A consistent archive whose 40 MiB skeleton is decoded and written 16 MiB at a time."""
    skeleton = lzma.compress(bytes(40 * MiB), preset=1)
    head = dict(header(40 * MiB, len(skeleton)), sha256=hashlib.sha256(bytes(40 * MiB)).hexdigest())
    (tmp_path / "zeros.lthz").write_bytes(archive(head, skeleton))
    out = unpack_to(tmp_path / "zeros.lthz", tmp_path / "zeros.bin")
    assert out.stat().st_size == 40 * MiB and out.read_bytes() == bytes(40 * MiB)


def test_roundtrip_still_exact(tmp_path, monkeypatch):
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    w[np.abs(w) < 1.0] = 0.0
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(w, "W")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    pack(tmp_path / "m.onnx", tmp_path / "m.lthz")
    monkeypatch.setattr(compress.export.compact_unpack, "PIECE_BYTES", 7)  # skeleton pieces cross tensors
    assert main(["export", "--unpack", str(tmp_path / "m.lthz"), "--out", str(tmp_path / "b.onnx")]) == 0
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()
    assert unpack(tmp_path / "m.lthz") == (tmp_path / "m.onnx").read_bytes()
