"""The deployment manifest (`export/deploy/manifest.json`): read and checked before anything of it
runs. A manifest is data a user can hand the toolkit, so every field is checked for its type, every
file it names must lie inside the deployment folder (the source graph inside the export folder)
and match the sha256 the export recorded, and no part may keep tensor data outside its folder
(ONNX Runtime refuses that, DeepSparse's compile would follow it). What fails is a ModelFileError
(exit 2, one line naming the file and the field), never a traceback and never a run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compress.core.deploy_manifest import FORMAT, MANIFEST, PART_RUNTIMES, TORCH_OPS, Manifest
from compress.core.errors import ModelFileError
from compress.evaluate.runtimes.ort import check_external_data, file_sha256


def read_manifest(folder: str | os.PathLike, *, verify: bool = True) -> Manifest:
    """The deployment manifest in `folder` (a run's `export/deploy`, or `export/` holding it),
    checked (`check_manifest`), as a `Manifest` whose `folder` is where it lies: a bad, tampered
    or half-written deployment is a ModelFileError (exit 2, one line), never run."""
    folder = Path(folder)
    path = folder / MANIFEST if (folder / MANIFEST).is_file() else folder / "deploy" / MANIFEST
    if not path.is_file():
        raise ModelFileError("no deployment manifest; run `compress export` to write "
                             "export/deploy/", file=str(folder / "deploy" / MANIFEST))
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ModelFileError(f"not a JSON manifest ({type(err).__name__}); run `compress export` "
                             "again", file=str(path)) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"not a {FORMAT} manifest", file=str(path))
    if manifest.get("status") == "unsupported":
        raise ModelFileError(f"no deployment for this model: {manifest.get('reason')}", file=str(path))
    if verify:
        check_manifest(manifest, path)
    return Manifest.from_json(manifest, folder=path.parent)


def deployment_intact(folder: str | os.PathLike) -> bool:
    """Whether `folder/manifest.json` is a finished deployment whose every part is the file the
    export wrote (or a finished "unsupported" verdict): what a resume may trust."""
    path = Path(folder) / MANIFEST
    try:
        if json.loads(path.read_text()).get("status") == "unsupported":
            return True
        read_manifest(folder)
    except (OSError, ValueError, AttributeError, ModelFileError):
        return False
    return True


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Types, file places and checksums: every part is a file inside the deployment folder with
    the sha256 the export recorded, no external data outside it, a known runtime and op; the
    source graph inside the export folder."""
    folder = path.parent
    canvas = manifest.get("canvas")
    if not isinstance(canvas, dict) or not all(isinstance(canvas.get(k), int) and canvas[k] > 0
                                               for k in ("height", "width")):
        raise ModelFileError("canvas: expected {height, width} as positive integers", file=str(path))
    _name_list(manifest.get("outputs"), "outputs", path)
    if not isinstance(manifest.get("input"), str):
        raise ModelFileError("input: expected the graph input's name", file=str(path))
    _inside(folder.parent, manifest.get("source"), path, "source")
    parts = manifest.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ModelFileError("parts: expected a non-empty list of parts", file=str(path))
    draft = manifest.get("status") == "draft"  # the export's own reference run, before compiling
    for index, part in enumerate(parts):
        _check_part(part, f"parts[{index}]", folder, path, draft)


def _check_part(part: Any, key: str, folder: Path, path: Path, draft: bool = False) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("name"), str):
        raise ModelFileError(f"{key}: expected an object with a name", file=str(path))
    if part.get("runtime") not in PART_RUNTIMES:
        raise ModelFileError(f"{key}.runtime: {part.get('runtime')!r}; allowed: "
                             f"{', '.join(PART_RUNTIMES)}", file=str(path))
    if part["runtime"] == "torch" and part.get("op") not in TORCH_OPS:
        raise ModelFileError(f"{key}.op: {part.get('op')!r}; allowed: {', '.join(TORCH_OPS)}",
                             file=str(path))
    if part["runtime"] == "torch" and not isinstance(part.get("params", {}), dict):
        raise ModelFileError(f"{key}.params: expected an object", file=str(path))
    _name_list(part.get("inputs"), f"{key}.inputs", path)
    _name_list(part.get("outputs"), f"{key}.outputs", path)
    if part["runtime"] == "deepsparse" and not draft:
        compiled = part.get("compiled")
        if not isinstance(compiled, list) or not compiled or not all(
                isinstance(c, dict) and _shapes(c.get("inputs")) and _shapes(c.get("outputs"))
                for c in compiled):
            raise ModelFileError(f"{key}.compiled: expected a list of {{inputs, outputs}} shapes",
                                 file=str(path))
    target = _inside(folder, part.get("file"), path, f"{key}.file")
    if not target.is_file():
        raise ModelFileError(f"{key}.file: {part['file']} is missing; run `compress export` "
                             "again", file=str(path))
    digest = part.get("sha256")
    if digest is not None and digest != file_sha256(target):
        raise ModelFileError(f"{key}.file: {part['file']} changed or was cut short since the "
                             "export (sha256 differs); run `compress export` again", file=str(path))
    check_external_data(target)


def _inside(folder: Path, name: Any, path: Path, key: str) -> Path:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ModelFileError(f"{key}: {name!r} is not a file name", file=str(path))
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ModelFileError(f"{key}: {name!r} points outside {folder}; a deployment reads only "
                             "files inside its own folder", file=str(path))
    return target


def _name_list(value: Any, key: str, path: Path) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelFileError(f"{key}: expected a list of tensor names", file=str(path))


def _shapes(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                    for d in s) for s in value)


