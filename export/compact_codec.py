"""Tensor codecs of the compact archive (`.lthz`), and decompression that never exceeds a size.

An fp32 payload (viewed as little-endian uint32 words) is stored as `dense` (all values) or
`sparse` (the zero/nonzero mask, then the nonzero values in order). The mask is Rice-coded gaps
between the positions of the minority symbol (a unary stream of quotients and a fixed-width stream
of k-bit remainders) or a zlib-compressed bitmask. Values are split into 4 byte planes, each raw or
zlib-compressed, whichever is smaller.

Decoding treats every blob as hostile: each decompression is bounded by the size the tensor
needs, and every length is checked before anything of that length is allocated.
"""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np

MAGIC = b"LTHZ"
VERSION = 1
_PROBE = 1 << 16
PLANE_HEAD = struct.calcsize("<BI")


class CorruptArchive(ValueError):
    """A blob does not decode to what the header declares."""


def bounded_inflate(blob: bytes, size: int) -> bytes:
    """zlib-decompress `blob`, which must decode to exactly `size` bytes; at most size + 1 are made."""
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(blob, size + 1)
    except zlib.error as err:
        raise CorruptArchive(f"zlib stream is corrupt ({err})") from err
    if len(out) > size:
        raise CorruptArchive(f"zlib stream decodes to more than the declared {size} bytes")
    if len(out) < size or not stream.eof:
        raise CorruptArchive(f"zlib stream ends before the declared {size} bytes")
    if stream.unused_data:
        raise CorruptArchive("zlib stream is followed by stray bytes")
    return out


# ---------------------------------------------------------------- values
def encode_values(values: np.ndarray) -> tuple[str, bytes]:
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


def decode_values(codec: str, blob: bytes, count: int) -> np.ndarray:
    """`count` uint32 words from a byte-plane blob (exactly four planes, nothing after them)."""
    if codec != "planes":
        raise CorruptArchive(f"unknown value codec {codec!r}")
    planes, pos = [], 0
    for _ in range(4):
        if pos + PLANE_HEAD > len(blob):
            raise CorruptArchive("value blob ends inside a plane header")
        flag, length = struct.unpack_from("<BI", blob, pos)
        body = blob[pos + PLANE_HEAD:pos + PLANE_HEAD + length]
        pos += PLANE_HEAD + length
        if flag not in (0, 1) or len(body) != length or (flag == 0 and length != count):
            raise CorruptArchive("value plane has a bad flag or length")
        planes.append(np.frombuffer(bounded_inflate(body, count) if flag else body, np.uint8))
    if pos != len(blob):
        raise CorruptArchive("value blob has trailing bytes")
    return np.ascontiguousarray(np.stack(planes, axis=1)).view("<u4").ravel()


# ---------------------------------------------------------------- mask
def _rice_bits(gaps: np.ndarray, k: int) -> int:
    return int(((gaps >> k) + 1).sum()) + k * len(gaps)


def rice_encode(positions: np.ndarray) -> tuple[int, bytes, bytes]:
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


def rice_limits(numel: int, count: int, k: int) -> tuple[int, int]:
    """Largest unary stream and exact remainder stream (bytes) for `count` positions < numel."""
    unary_bits = ((numel - count) >> k) + count
    return (unary_bits + 7) // 8, (count * k + 7) // 8


def rice_decode(k: int, unary: bytes, rem: bytes, count: int, numel: int) -> np.ndarray:
    ubits = np.unpackbits(np.frombuffer(unary, np.uint8))
    zeros = np.flatnonzero(ubits == 0)[:count]
    if len(zeros) != count:
        raise CorruptArchive("rice mask holds fewer positions than declared")
    q = np.diff(zeros, prepend=-1) - 1
    rbits = np.unpackbits(np.frombuffer(rem, np.uint8))[: count * k].reshape(count, k)
    r = rbits.astype(np.int64) @ (1 << np.arange(k - 1, -1, -1, dtype=np.int64))
    positions = np.cumsum(((q.astype(np.int64) << k) | r) + 1) - 1
    if count and positions[-1] >= numel:
        raise CorruptArchive("rice mask points past the end of its tensor")
    return positions


# ---------------------------------------------------------------- tensors
def _sparse_candidates(words: np.ndarray, nonzero: np.ndarray) -> list[tuple[dict, list[bytes]]]:
    numel, count = len(words), int(nonzero.sum())
    codec, vblob = encode_values(words[nonzero])
    minority = "nonzero" if count <= numel - count else "zero"
    positions = np.flatnonzero(nonzero if minority == "nonzero" else ~nonzero)
    k, unary, rem = rice_encode(positions)
    return [
        ({"form": "sparse", "mask": "rice", "minority": minority, "k": k,
          "minority_count": len(positions), "nonzero": count, "values": codec},
         [unary, rem, vblob]),
        ({"form": "sparse", "mask": "bitmask-zlib", "nonzero": count, "values": codec},
         [zlib.compress(np.packbits(nonzero).tobytes(), 6), vblob]),
    ]


def encode_tensor(words: np.ndarray) -> tuple[dict, list[bytes]]:
    """Choose the smallest form for one fp32 payload (viewed as uint32 words).

    The dense form of a big tensor is first sized on an evenly strided 1/16 sample; it is encoded
    in full only when that estimate is within 10% of the best sparse form.
    """
    nonzero = words != 0
    candidates = _sparse_candidates(words, nonzero) if not nonzero.all() else []
    best_sparse = min((sum(map(len, blobs)) for _, blobs in candidates), default=None)
    if best_sparse is not None and len(words) >= 16 * _PROBE:
        estimate = 16 * len(encode_values(words[::16])[1])
        if estimate > 1.1 * best_sparse:
            return min(candidates, key=lambda c: sum(map(len, c[1])))
    codec, blob = encode_values(words)
    candidates.append(({"form": "dense", "values": codec}, [blob]))
    return min(candidates, key=lambda c: sum(map(len, c[1])))


def decode_tensor(meta: dict, blobs: list[bytes], numel: int) -> bytes:
    """The payload bytes of one tensor whose header entry `meta` was validated beforehand."""
    if meta["form"] == "dense":
        return decode_values(meta["values"], blobs[0], numel).tobytes()
    if meta["mask"] == "rice":
        positions = rice_decode(meta["k"], blobs[0], blobs[1], meta["minority_count"], numel)
        nonzero = np.zeros(numel, bool)
        nonzero[positions] = True
        if meta["minority"] == "zero":
            nonzero = ~nonzero
    else:
        bits = bounded_inflate(blobs[0], (numel + 7) // 8)
        nonzero = np.unpackbits(np.frombuffer(bits, np.uint8), count=numel).astype(bool)
    if int(nonzero.sum()) != meta["nonzero"]:
        raise CorruptArchive("mask and declared nonzero count disagree")
    words = np.zeros(numel, "<u4")
    words[nonzero] = decode_values(meta["values"], blobs[-1], meta["nonzero"])
    return words.tobytes()
