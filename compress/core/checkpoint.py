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
    _check_model_entry(payload, path)
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


def _check_model_entry(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """A `model` entry, where there is one, is a state dict: parameter name -> tensor."""
    if "model" not in payload:
        return
    state = payload["model"]
    if not isinstance(state, dict):
        raise ModelFileError(f"'model' is {type(state).__name__} {str(state)[:40]!r}; expected the "
                             "model's state dict (parameter name -> tensor)", file=str(path),
                             key="model")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"entry {str(bad[0])[:60]!r} is {type(state[bad[0]]).__name__}; "
                             "expected parameter name -> tensor", file=str(path), key="model")


def check_state_dict_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                          path: str | os.PathLike, model_name: str = "the model") -> None:
    """ModelFileError naming the first key that is missing, unexpected or of another shape than
    `expected` (the model's own state dict), before load_state_dict's multi-line RuntimeError."""
    for key, tensor in expected.items():
        if key not in state:
            raise ModelFileError(f"missing; {model_name} needs it ({len(expected)} keys, "
                                 f"{len(set(expected) - set(state))} missing)", file=str(path),
                                 key=f"model.{key}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelFileError(f"shape {tuple(state[key].shape)} does not fit {model_name}'s "
                                 f"{tuple(tensor.shape)}", file=str(path), key=f"model.{key}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelFileError(f"not a parameter of {model_name} ({len(extra)} unexpected keys)",
                             file=str(path), key=f"model.{extra[0]}")


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
