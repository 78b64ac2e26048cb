"""Checkpoints as plain dicts, written atomically, read with `weights_only=True`, checksummed.

`save_checkpoint(path, model=..., optimizer=..., iteration=...)` writes one file (atomic rename)
whose dict carries, under `checksum`, the sha256 of its own content: every key path, type, dtype,
shape and tensor byte in a canonical order (`state_digest`). The digest is over the content, not the
file bytes, so it is stable across re-serialisation and the checkpoint stays a single file (a kill
between two files could otherwise leave a stale sidecar). `load_checkpoint` refuses, with one
`ModelFileError` line each: a missing file, a truncated or unreadable one, a file whose pickle holds
code (weights_only refuses it; the code never runs), a non-dict, and a checksum mismatch.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from compress.core.atomic import torch_save
from compress.core.errors import ModelFileError

log = logging.getLogger(__name__)

CHECKSUM_KEY = "checksum"


def _update_digest(digest: Any, obj: Any, path: str) -> None:
    digest.update(f"<{path}:{type(obj).__name__}>".encode())
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().to("cpu").contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _update_digest(digest, obj[key], f"{path}/{key!r}")
    elif isinstance(obj, (list, tuple)):
        for index, item in enumerate(obj):
            _update_digest(digest, item, f"{path}/{index}")
    else:
        digest.update(repr(obj).encode())


def state_digest(parts: dict[str, Any]) -> str:
    """sha256 (hex) over the content of a checkpoint dict, ignoring its `checksum` entry."""
    digest = hashlib.sha256()
    _update_digest(digest, {k: v for k, v in parts.items() if k != CHECKSUM_KEY}, "")
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, **parts: Any) -> str:
    """Write `parts` (model=state_dict, optimizer=..., iteration=...) atomically; return the checksum."""
    if CHECKSUM_KEY in parts:
        raise ValueError(f"'{CHECKSUM_KEY}' is reserved for the checkpoint's own digest")
    payload = dict(parts)
    payload[CHECKSUM_KEY] = state_digest(payload)
    torch_save(path, payload)
    return payload[CHECKSUM_KEY]


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    # torch's messages run on with advice after the first sentence: keep the first one.
    return lines[0].split(". ")[0] if lines else type(err).__name__


def read_torch_file(path: str | os.PathLike) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` with one-line ModelFileErrors."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("file not found (expected a torch .pt file)", file=str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        text = _first_line(err)
        if "weights only load failed" in text.lower() or "weights_only" in text.lower():
            raise ModelFileError(
                "refused: the file holds pickled code or objects other than tensors and plain "
                "containers (loaded with weights_only=True)",
                file=str(path),
            ) from err
        raise ModelFileError(f"not a readable torch file (truncated or corrupt): {text}", file=str(path)) from err


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict written by `save_checkpoint` (or any plain dict; checksum if present)."""
    payload = read_torch_file(path)
    if not isinstance(payload, dict):
        raise ModelFileError(f"expected a dict checkpoint, got {type(payload).__name__}", file=str(path))
    stored = payload.get(CHECKSUM_KEY)
    if stored is None:
        log.debug("%s has no checksum; content not verified", path)
        return payload
    actual = state_digest(payload)
    if stored != actual:
        raise ModelFileError(
            f"checksum mismatch (stored {str(stored)[:12]}..., content {actual[:12]}...): file is corrupt",
            file=str(path),
        )
    return payload


def state_dict_from_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A model state dict from a plain state dict file or a checkpoint dict with `model`."""
    payload = load_checkpoint(path)
    if "model" in payload and isinstance(payload["model"], dict):
        payload = payload["model"]
    bad = [k for k, v in payload.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(
            f"not a state dict: key {bad[0]!r} is not a tensor (expected a state dict or a dict with 'model')",
            file=str(path),
        )
    return payload
