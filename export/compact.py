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
value (byte-exact, but 4 bytes each), which is why `compress.export.onnx_export` writes canonical +0.0.
- `dense`: all values;
- `sparse`: the zero/nonzero mask, then the nonzero values in order. The mask is either Rice-coded
  gaps between the positions of the minority symbol (split into a unary stream of quotients and a
  fixed-width stream of k-bit remainders; k chosen per tensor; within ~1-2% of the mask entropy
  H(s) for random masks), or a zlib-compressed bitmask.
Values are split into 4 byte planes (byte i of every fp32 value together); each plane is stored
raw or zlib-compressed, whichever is smaller (the sign/exponent plane of trained or Gaussian weights
compresses; the mantissa planes do not). The codecs live in `compress.export.compact_codec`; reading
(`compress.export.compact_unpack`, re-exported here) treats every archive as hostile input.
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
from compress.export.compact_codec import MAGIC, VERSION, encode_tensor
from compress.export.compact_unpack import read_header, read_layout, unpack, unpack_to
from compress.export.onnx_export import load_onnx

__all__ = ["MAGIC", "VERSION", "bound_bytes", "fp32_payloads", "pack", "read_header", "read_layout",
           "unpack", "unpack_to"]
FLOAT = 1  # onnx.TensorProto.FLOAT


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
        meta, parts = encode_tensor(words)
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
