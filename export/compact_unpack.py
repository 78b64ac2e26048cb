"""Reading a compact archive (`.lthz`) as hostile input: validate, then decode as a stream.

Before anything is allocated from what the file says, the header's own size is capped, every
declared size is checked against the others and against the file (header + skeleton + tensor blobs
= file size; decoded skeleton + 4 bytes per weight = original size <= 2 GiB; each blob no larger
than its coding can need), and every decompression is bounded by the size it must produce (the
skeleton is decoded in pieces, so memory follows the largest tensor, not the file). The
decoded file is written piece by piece into a temporary file and renamed only when its sha256
matches, so any violation raises a one-line ModelFileError and leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from compress.core.atomic import atomic_open
from compress.core.errors import ModelFileError
from compress.export.compact_codec import MAGIC, PLANE_HEAD, VERSION, CorruptArchive, decode_tensor, rice_limits

PREAMBLE = struct.calcsize("<4sBI")
MAX_ORIGINAL_BYTES = 2 << 30  # an ONNX (protobuf) file is at most 2 GiB
MAX_HEADER_BYTES = 16 << 20  # the JSON header takes ~150 bytes per tensor
PIECE_BYTES = 16 << 20  # the skeleton is decoded and written in pieces of this size
BLOBS_PER_FORM = {("dense", None): 1, ("sparse", "rice"): 3, ("sparse", "bitmask-zlib"): 2}


@dataclass(frozen=True)
class Layout:
    """A validated header and where the parts of the archive lie."""

    path: Path
    header: dict
    skeleton_at: int  # file offset of the lzma skeleton blob
    skeleton_raw: int  # its decoded size


def _int(entry: dict, key: str, low: int, high: int) -> int:
    value = entry.get(key)
    if type(value) is not int or not low <= value <= high:
        raise CorruptArchive(f"header field {key!r} = {str(value)[:40]} is not an integer in "
                             f"[{low}, {high}]")
    return value


def _read_header(handle: IO[bytes], file_size: int) -> tuple[dict, int]:
    magic, version, header_len = struct.unpack("<4sBI", handle.read(PREAMBLE).ljust(PREAMBLE, b"\0"))
    if magic != MAGIC:
        raise CorruptArchive("not a compact archive (bad magic; expected LTHZ)")
    if version != VERSION:
        raise CorruptArchive(f"archive version {version} unsupported; allowed: {VERSION}")
    if header_len > min(MAX_HEADER_BYTES, file_size - PREAMBLE):
        raise CorruptArchive(f"header length {header_len} exceeds the file or the "
                             f"{MAX_HEADER_BYTES >> 20} MiB limit")
    stream = zlib.decompressobj()
    try:
        text = stream.decompress(handle.read(header_len), MAX_HEADER_BYTES + 1)
        if len(text) > MAX_HEADER_BYTES or not stream.eof:
            raise CorruptArchive(f"header does not decode to a JSON text within "
                                 f"{MAX_HEADER_BYTES >> 20} MiB")
        header = json.loads(text)
    except (zlib.error, ValueError, RecursionError) as err:  # ValueError: bad JSON or UTF-8
        raise CorruptArchive(f"corrupt header ({err})") from err
    if not isinstance(header, dict):
        raise CorruptArchive("header is not a JSON object")
    return header, PREAMBLE + header_len


def _blob_limits(entry: dict, numel: int) -> list[int]:
    """The largest size each blob of a tensor's coding can take (the rice remainder: exact)."""
    count = numel if entry["form"] == "dense" else _int(entry, "nonzero", 0, numel)
    values = 4 * (PLANE_HEAD + count)
    if entry["form"] == "dense":
        return [values]
    if entry["mask"] == "bitmask-zlib":
        bitmask = (numel + 7) // 8
        return [bitmask + bitmask // 1000 + 64, values]
    if entry.get("minority") not in ("nonzero", "zero"):
        raise CorruptArchive("rice mask minority must be 'nonzero' or 'zero'")
    minority = count if entry["minority"] == "nonzero" else numel - count
    if _int(entry, "minority_count", 0, numel) != minority:
        raise CorruptArchive("rice mask count disagrees with the nonzero count")
    unary, rem = rice_limits(numel, minority, _int(entry, "k", 0, 40))
    if entry["blobs"][1] != rem:
        raise CorruptArchive(f"rice remainder blob is {entry['blobs'][1]} bytes, expected {rem}")
    return [unary, rem, values]


def _check_entry(entry: Any, original: int) -> int:
    """Validate one tensor entry against `original` bytes; returns the sum of its blob sizes."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise CorruptArchive("a tensor entry is not an object with a name")
    numel = _int(entry, "numel", 1, original // 4)
    _int(entry, "at", 0, original)
    blobs = entry.get("blobs")
    if not isinstance(blobs, list) or any(type(b) is not int or b < 0 for b in blobs):
        raise CorruptArchive(f"tensor {entry['name'][:60]!r}: blobs must be non-negative integers")
    form = (entry.get("form"), entry.get("mask"))
    if BLOBS_PER_FORM.get(form) != len(blobs) or entry.get("values") != "planes":
        raise CorruptArchive(f"tensor {entry['name'][:60]!r}: unknown coding {form}")
    for size, limit in zip(blobs, _blob_limits(entry, numel)):
        if size > limit:
            raise CorruptArchive(f"tensor {entry['name'][:60]!r}: a {size}-byte blob where its "
                                 f"coding needs at most {limit}")
    return sum(blobs)


def _validate(path: Path, header: dict, skeleton_at: int, file_size: int) -> Layout:
    if header.get("format") != "lthz" or header.get("version") != VERSION:
        raise CorruptArchive(f"header format/version is not lthz/{VERSION}")
    original = _int(header, "original_bytes", 0, MAX_ORIGINAL_BYTES)
    if not re.fullmatch(r"[0-9a-f]{64}", str(header.get("sha256"))):
        raise CorruptArchive("header sha256 is not 64 hex digits")
    skeleton = _int(header, "skeleton_bytes", 0, file_size)
    tensors = header.get("tensors")
    if not isinstance(tensors, list):
        raise CorruptArchive("header tensors is not a list")
    blob_bytes = sum(_check_entry(entry, original) for entry in tensors)
    raw = original - 4 * sum(entry["numel"] for entry in tensors)
    offsets = [entry["at"] for entry in tensors]
    if raw < 0 or offsets != sorted(offsets) or max(offsets, default=0) > raw:
        raise CorruptArchive(f"tensor sizes and offsets do not fit the declared {original} bytes")
    if skeleton > raw + raw // 64 + 4096:
        raise CorruptArchive(f"skeleton blob of {skeleton} bytes for a {raw}-byte skeleton")
    declared = skeleton_at + skeleton + blob_bytes
    if declared != file_size:
        raise CorruptArchive(f"the header declares {declared} bytes but the file has {file_size}")
    return Layout(path, header, skeleton_at, raw)


def read_layout(archive_path: str | os.PathLike) -> Layout:
    """Read and validate an archive's header; nothing it declares is allocated yet."""
    path = Path(archive_path)
    if not path.is_file():
        raise ModelFileError("file not found; expected a .lthz archive", file=str(path))
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            header, skeleton_at = _read_header(handle, size)
        return _validate(path, header, skeleton_at, size)
    except CorruptArchive as err:
        raise ModelFileError(f"refused: {err}", file=str(path)) from err


def read_header(archive_path: str | os.PathLike) -> dict:
    """The validated header of an archive (sizes per tensor, original size and sha256)."""
    return read_layout(archive_path).header


def _read(handle: IO[bytes], size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise CorruptArchive("archive is shorter than its header declares")
    return data


class _Skeleton:
    """The lzma skeleton decoded piece by piece: never more in memory than one piece, never more
    in total than the declared size."""

    def __init__(self, packed: bytes, size: int) -> None:
        self._stream, self._input, self._left = lzma.LZMADecompressor(), packed, size

    def take(self, count: int) -> Iterator[bytes]:
        while count > 0:
            if self._stream.eof:
                raise CorruptArchive("lzma skeleton ends before its declared size")
            try:
                piece = self._stream.decompress(self._input, min(count, PIECE_BYTES))
            except lzma.LZMAError as err:
                raise CorruptArchive(f"lzma skeleton is corrupt ({err})") from err
            self._input = b""
            if not piece:  # all input was given at once: nothing more will come
                raise CorruptArchive("lzma skeleton ends before its declared size")
            count -= len(piece)
            self._left -= len(piece)
            yield piece

    def rest(self) -> Iterator[bytes]:
        yield from self.take(self._left)
        if not self._stream.eof and self._stream.decompress(self._input, 1):
            raise CorruptArchive("lzma skeleton decodes to more than its declared size")
        if not self._stream.eof or self._stream.unused_data:
            raise CorruptArchive("lzma skeleton does not end where declared")


def _pieces(layout: Layout) -> Iterator[bytes]:
    with open(layout.path, "rb") as handle:
        handle.seek(layout.skeleton_at)
        skeleton = _Skeleton(_read(handle, layout.header["skeleton_bytes"]), layout.skeleton_raw)
        cursor = 0
        for entry in layout.header["tensors"]:
            blobs = [_read(handle, size) for size in entry["blobs"]]
            yield from skeleton.take(entry["at"] - cursor)
            yield decode_tensor(entry, blobs, entry["numel"])
            cursor = entry["at"]
        yield from skeleton.rest()


def _decode_into(layout: Layout, sink: Callable[[bytes], Any]) -> None:
    digest, total = hashlib.sha256(), 0
    try:
        for piece in _pieces(layout):
            digest.update(piece)
            total += len(piece)
            sink(piece)
    except (CorruptArchive, ValueError, IndexError, struct.error) as err:
        raise ModelFileError(f"corrupt archive: {err}", file=str(layout.path)) from err
    if total != layout.header["original_bytes"] or digest.hexdigest() != layout.header["sha256"]:
        raise ModelFileError("archive does not decode to the original (sha256 mismatch)",
                             file=str(layout.path))


def unpack(archive_path: str | os.PathLike) -> bytes:
    """Decode an archive back to the original ONNX bytes (checked against the stored sha256)."""
    parts: list[bytes] = []
    _decode_into(read_layout(archive_path), parts.append)
    return b"".join(parts)


def unpack_to(archive_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Decode an archive into `out_path` (temporary file, renamed once the sha256 matches)."""
    layout = read_layout(archive_path)
    with atomic_open(out_path, "wb") as handle:
        _decode_into(layout, handle.write)
    return Path(out_path)
