"""Compact sparse archive (`.lthz`) of an ONNX model; unpacks to the original file byte for byte.

Layout (all integers little-endian):
    b"LTHZ" | u8 version (=1) | u32 header_len | header | skeleton blob | tensor blobs...

`header` is zlib-compressed JSON: the original file's size and sha256, the skeleton blob's length
and, per stored tensor (in blob order): name, numel, the offset in the skeleton where its bytes go
back, and how it is coded. The skeleton is the original ONNX file with the payload bytes of every
fp32 initializer (`raw_data`, or packed `float_data`) cut out, lzma-compressed; the protobuf tags
and lengths stay in it, so splicing the decoded payloads back in gives the original bytes exactly,
whatever serialiser wrote the file.

Each fp32 payload is stored in the smallest of these forms (chosen per tensor by encoded size,
never by a fixed sparsity threshold). "Zero" means the bit pattern 0x00000000: a -0.0 is kept as a
value (byte-exact, but 4 bytes each), which is why `export.onnx_export` writes canonical +0.0.
- `dense`: all values;
- `sparse`: the zero/nonzero mask, then the nonzero values in order. The mask is either Rice-coded
  gaps between the positions of the minority symbol (split into a unary stream of quotients and a
  fixed-width stream of k-bit remainders; k chosen per tensor; within ~1-2% of the mask entropy
  H(s) for random masks), or a zlib-compressed bitmask.
Values are split into 4 byte planes (byte i of every fp32 value together); each plane is stored
raw or zlib-compressed, whichever is smaller (the sign/exponent plane of trained or Gaussian weights
compresses; the mantissa planes do not).
"""
from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.core.atomic import write_bytes
from compress.core.errors import ModelFileError
from export.onnx_export import load_onnx

MAGIC = b"LTHZ"
VERSION = 1
FLOAT = 1  # onnx.TensorProto.FLOAT
_PROBE = 1 << 16


def bound_bytes(numel: int, zeros: int) -> float:
    """Information bound H(s)/8 + 4(1-s) bytes per weight, times numel (s = zeros / numel)."""
    if numel == 0:
        return 0.0
    s = zeros / numel
    entropy = 0.0 if s in (0.0, 1.0) else -(s * math.log2(s) + (1 - s) * math.log2(1 - s))
    return numel * (entropy / 8 + 4 * (1 - s))


# ---------------------------------------------------------------- protobuf wire format
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """Yield (field number, wire type, value start, value end) of one protobuf message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = _varint(buf, pos)
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            nxt = pos + length
        elif wire == 5:
            nxt = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if nxt > end:
            raise ValueError("truncated protobuf field")
        yield field, wire, pos, nxt
        pos = nxt


@dataclass
class Payload:
    name: str
    start: int  # offset of the payload bytes in the original file
    length: int


def fp32_payloads(data: bytes) -> list[Payload]:
    """Byte spans of fp32 initializer payloads: ModelProto.graph(7).initializer(5).raw_data(9)."""
    found: list[Payload] = []
    for field, wire, g0, g1 in _fields(data, 0, len(data)):
        if field != 7 or wire != 2:
            continue
        for gfield, gwire, t0, t1 in _fields(data, g0, g1):
            if gfield != 5 or gwire != 2:
                continue
            name, dtype, span = "", 0, None
            for tfield, twire, v0, v1 in _fields(data, t0, t1):
                if tfield == 2 and twire == 0:
                    dtype = _varint(data, v0)[0]
                elif tfield == 8 and twire == 2:
                    name = data[v0:v1].decode("utf-8", "replace")
                elif tfield in (9, 4) and twire == 2:  # raw_data, or packed float_data
                    span = (v0, v1)
            if dtype == FLOAT and span and (span[1] - span[0]) % 4 == 0 and span[1] > span[0]:
                found.append(Payload(name, span[0], span[1] - span[0]))
    return found


# ---------------------------------------------------------------- value and mask coding
def _encode_values(values: np.ndarray) -> tuple[str, bytes]:
    """Byte-plane split of the fp32 words; each plane zlib-compressed when that is smaller."""
    planes = np.frombuffer(values.astype("<u4", copy=False).tobytes(), np.uint8).reshape(-1, 4).T
    parts = []
    for plane in planes:
        raw = plane.tobytes()
        # A plane whose first 64 KiB does not compress is mantissa noise: skip the full pass.
        hopeless = len(raw) > 4 * _PROBE and len(zlib.compress(raw[:_PROBE], 6)) > 0.99 * _PROBE
        packed = raw if hopeless else zlib.compress(raw, 6)
        flag, body = (1, packed) if len(packed) < len(raw) else (0, raw)
        parts.append(struct.pack("<BI", flag, len(body)) + body)
    return "planes", b"".join(parts)


def _decode_values(codec: str, blob: bytes, count: int) -> np.ndarray:
    if codec != "planes":
        raise ValueError(f"unknown value codec {codec!r}")
    planes, pos = [], 0
    for _ in range(4):
        flag, length = struct.unpack_from("<BI", blob, pos)
        body = blob[pos + 5:pos + 5 + length]
        pos += 5 + length
        planes.append(np.frombuffer(zlib.decompress(body) if flag else body, np.uint8, count=count))
    return np.ascontiguousarray(np.stack(planes, axis=1)).view("<u4").ravel()


def _rice_bits(gaps: np.ndarray, k: int) -> int:
    return int(((gaps >> k) + 1).sum()) + k * len(gaps)


def _rice_encode(positions: np.ndarray) -> tuple[int, bytes, bytes]:
    """Rice-code the gaps between sorted positions with the best k; returns (k, unary, rem)."""
    gaps = np.diff(positions, prepend=-1) - 1
    k = 0
    if len(gaps):
        guess = int(math.log2(float(gaps.mean()) + 1.0))
        k = min(range(max(0, guess - 3), guess + 4), key=lambda kk: _rice_bits(gaps, kk))
    q = gaps >> k
    unary = np.ones(int((q + 1).sum()), np.uint8)
    unary[np.cumsum(q + 1) - 1] = 0
    shifts = np.arange(k - 1, -1, -1, dtype=np.int64)
    rem_bits = ((gaps[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    return k, np.packbits(unary).tobytes(), np.packbits(rem_bits).tobytes()


def _rice_decode(k: int, unary: bytes, rem: bytes, count: int) -> np.ndarray:
    ubits = np.unpackbits(np.frombuffer(unary, np.uint8))
    zeros = np.flatnonzero(ubits == 0)[:count]
    q = np.diff(zeros, prepend=-1) - 1
    rbits = np.unpackbits(np.frombuffer(rem, np.uint8))[: count * k].reshape(count, k)
    r = rbits.astype(np.int64) @ (1 << np.arange(k - 1, -1, -1, dtype=np.int64))
    gaps = (q.astype(np.int64) << k) | r
    return np.cumsum(gaps + 1) - 1


def _sparse_candidates(words: np.ndarray, nonzero: np.ndarray) -> list[tuple[dict, list[bytes]]]:
    numel, count = len(words), int(nonzero.sum())
    codec, vblob = _encode_values(words[nonzero])
    minority = "nonzero" if count <= numel - count else "zero"
    positions = np.flatnonzero(nonzero if minority == "nonzero" else ~nonzero)
    k, unary, rem = _rice_encode(positions)
    return [
        ({"form": "sparse", "mask": "rice", "minority": minority, "k": k,
          "minority_count": len(positions), "nonzero": count, "values": codec},
         [unary, rem, vblob]),
        ({"form": "sparse", "mask": "bitmask-zlib", "nonzero": count, "values": codec},
         [zlib.compress(np.packbits(nonzero).tobytes(), 6), vblob]),
    ]


def _encode_tensor(words: np.ndarray) -> tuple[dict, list[bytes]]:
    """Choose the smallest form for one fp32 payload (viewed as uint32 words).

    The dense form of a big tensor is first sized on an evenly strided 1/16 sample; it is encoded
    in full only when that estimate is within 10% of the best sparse form.
    """
    nonzero = words != 0
    candidates = _sparse_candidates(words, nonzero) if not nonzero.all() else []
    best_sparse = min((sum(map(len, blobs)) for _, blobs in candidates), default=None)
    if best_sparse is not None and len(words) >= 16 * _PROBE:
        estimate = 16 * len(_encode_values(words[::16])[1])
        if estimate > 1.1 * best_sparse:
            return min(candidates, key=lambda c: sum(map(len, c[1])))
    codec, blob = _encode_values(words)
    candidates.append(({"form": "dense", "values": codec}, [blob]))
    return min(candidates, key=lambda c: sum(map(len, c[1])))


def _decode_tensor(meta: dict, blobs: list[bytes], numel: int) -> bytes:
    if meta["form"] == "dense":
        return _decode_values(meta["values"], blobs[0], numel).tobytes()
    if meta["mask"] == "rice":
        positions = _rice_decode(meta["k"], blobs[0], blobs[1], meta["minority_count"])
        nonzero = np.zeros(numel, bool)
        nonzero[positions] = True
        if meta["minority"] == "zero":
            nonzero = ~nonzero
    else:
        nonzero = np.unpackbits(np.frombuffer(zlib.decompress(blobs[0]), np.uint8),
                                count=numel).astype(bool)
    words = np.zeros(numel, "<u4")
    words[nonzero] = _decode_values(meta["values"], blobs[-1], meta["nonzero"])
    return words.tobytes()


# ---------------------------------------------------------------- archive
def pack(onnx_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Write the compact archive of `onnx_path` to `out_path`; returns size statistics."""
    load_onnx(onnx_path)
    data = Path(onnx_path).read_bytes()
    try:
        payloads = fp32_payloads(data)
    except ValueError as err:
        raise ModelFileError(f"cannot parse ONNX protobuf ({err})", file=str(onnx_path)) from err
    skeleton, entries, blobs, stats = bytearray(), [], [], []
    cursor = 0
    for item in payloads:
        skeleton += data[cursor:item.start]
        cursor = item.start + item.length
        words = np.frombuffer(data, "<u4", count=item.length // 4, offset=item.start)
        meta, parts = _encode_tensor(words)
        numel, zeros = len(words), int(((words & 0x7FFFFFFF) == 0).sum())
        entries.append({"name": item.name, "numel": numel, "at": len(skeleton),
                        "blobs": [len(b) for b in parts], **meta})
        blobs += parts
        stats.append({"name": item.name, "numel": numel, "zeros": zeros, "form": meta["form"],
                      "encoded_bytes": sum(map(len, parts)),
                      "mask_bytes": sum(map(len, parts[:-1])), "values_bytes": len(parts[-1]),
                      "bound_bytes": bound_bytes(numel, zeros)})
    skeleton += data[cursor:]
    packed_skeleton = lzma.compress(bytes(skeleton), preset=9)
    header = zlib.compress(json.dumps({
        "format": "lthz", "version": VERSION, "original_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "skeleton_bytes": len(packed_skeleton),
        "tensors": entries}, separators=(",", ":")).encode(), 9)
    archive = b"".join([MAGIC, struct.pack("<BI", VERSION, len(header)), header,
                        packed_skeleton, *blobs])
    write_bytes(out_path, archive)
    return {"original_bytes": len(data), "archive_bytes": len(archive),
            "skeleton_bytes": len(packed_skeleton), "header_bytes": len(header),
            "weights": sum(t["numel"] for t in stats),
            "bound_bytes": sum(t["bound_bytes"] for t in stats), "tensors": stats}


def read_header(archive_path: str | os.PathLike) -> tuple[dict, bytes, int]:
    """Parse an archive; returns (header, archive bytes, offset of the skeleton blob)."""
    path = Path(archive_path)
    if not path.is_file():
        raise ModelFileError("file not found; expected a .lthz archive", file=str(path))
    data = path.read_bytes()
    if len(data) < 9 or data[:4] != MAGIC:
        raise ModelFileError("not a compact archive (bad magic; expected LTHZ)", file=str(path))
    version, header_len = struct.unpack_from("<BI", data, 4)
    if version != VERSION:
        raise ModelFileError(f"archive version {version} unsupported; allowed: {VERSION}",
                             file=str(path))
    try:
        header = json.loads(zlib.decompress(data[9:9 + header_len]))
    except (zlib.error, ValueError) as err:
        raise ModelFileError("corrupt or truncated archive header", file=str(path)) from err
    return header, data, 9 + header_len


def unpack(archive_path: str | os.PathLike) -> bytes:
    """Decode an archive back to the original ONNX bytes (checked against the stored sha256)."""
    header, data, pos = read_header(archive_path)
    try:
        skeleton = lzma.decompress(data[pos:pos + header["skeleton_bytes"]])
        pos += header["skeleton_bytes"]
        out, cursor = [], 0
        for entry in header["tensors"]:
            parts = []
            for length in entry["blobs"]:
                parts.append(data[pos:pos + length])
                pos += length
            out += [skeleton[cursor:entry["at"]], _decode_tensor(entry, parts, entry["numel"])]
            cursor = entry["at"]
        out.append(skeleton[cursor:])
    except (lzma.LZMAError, zlib.error, struct.error, ValueError, KeyError, IndexError) as err:
        raise ModelFileError(f"corrupt or truncated archive ({err})",
                             file=str(archive_path)) from err
    result = b"".join(out)
    if hashlib.sha256(result).hexdigest() != header["sha256"]:
        raise ModelFileError("archive does not decode to the original (sha256 mismatch)",
                             file=str(archive_path))
    return result


def unpack_to(archive_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Decode an archive and write the ONNX file atomically; returns `out_path`."""
    write_bytes(out_path, unpack(archive_path))
    return Path(out_path)
