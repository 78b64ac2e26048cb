"""The deployment manifest (`export/deploy/manifest.json`) as typed data: its format constants,
`Manifest` (the deployment) and `Part` (one of its files), with `to_json` / `from_json`.

`compress.export.deploy.build` writes it, `compress.evaluate.runtimes.manifest` reads and checks it. It lives in
compress.core because both may import compress.core, while evaluate importing export would close
a package cycle (compress.export.deploy already runs the deployment through compress.evaluate.runtimes).

`to_json` writes the keys in the order the export always wrote them, leaving out fields that are
None (a part's `padding` goes with its `compiled` shapes: None there is "no padding"), so a
manifest written from these objects is the same bytes as before. What a part's `params`,
`padding` and `compiled`, and the manifest's `parity` / `int8_conversion` hold stays plain JSON.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "lth-compress/deploy-1"
PART_RUNTIMES = ("onnxruntime", "deepsparse", "torch")
TORCH_OPS = ("paste_masks", "multiscale_roi_align")  # the ops compress.evaluate.runtimes.pipeline runs


def _present(data: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None or k in keep}


@dataclass(frozen=True)
class Part:
    """One part file of the deployment and how it runs (`runtime`: onnxruntime, deepsparse or
    torch; a torch part names its `op` and `params`; a DeepSparse part its `compiled` shapes and
    `padding` rule)."""
    name: str
    file: str
    runtime: str
    inputs: list[str]
    outputs: list[str]
    sha256: str | None = None
    bytes: int | None = None
    op: str | None = None
    params: dict[str, Any] | None = None
    padding: dict[str, Any] | None = None
    compiled: list[dict[str, Any]] | None = None
    reference_max_abs_diff: float | None = None
    reference_rois: int | None = None
    reference_status: str | None = None
    precision: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _present(dataclasses.asdict(self), ("padding",) if self.compiled is not None else ())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Part:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Canvas:
    """The fixed input size every image is placed on (`pad_value` and `placement` say how)."""
    height: int
    width: int
    pad_value: float | None = None
    placement: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _present(dataclasses.asdict(self))


@dataclass(frozen=True)
class Manifest:
    """A deployment: the full graph it was cut from (`source`, beside the deployment folder), its
    input and outputs, the canvas, the parts in the order they run and the export's verdict
    (`status` ok / failed / unchecked / draft / unsupported, with `reason` or `parity`).
    `folder` is where it was read from (not written)."""
    source: str
    input: str
    outputs: list[str]
    canvas: Canvas
    status: str
    parts: list[Part] = field(default_factory=list)
    reason: str | None = None
    parity: dict[str, Any] | None = None
    int8_conversion: dict[str, Any] | None = None
    format: str = FORMAT
    folder: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return _present({"format": self.format, "source": self.source, "input": self.input,
                         "outputs": self.outputs, "canvas": self.canvas.to_json(),
                         "status": self.status, "reason": self.reason,
                         "parts": [p.to_json() for p in self.parts], "parity": self.parity,
                         "int8_conversion": self.int8_conversion})

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: str | Path | None = None) -> Manifest:
        canvas = data.get("canvas") or {}
        sizes = {f.name: canvas.get(f.name) for f in dataclasses.fields(Canvas)}
        return cls(source=data.get("source"), input=data.get("input"),
                   outputs=data.get("outputs"), status=data.get("status"),
                   canvas=Canvas(**sizes),
                   parts=[Part.from_json(p) for p in data.get("parts") or []],
                   reason=data.get("reason"), parity=data.get("parity"),
                   int8_conversion=data.get("int8_conversion"),
                   format=data.get("format", FORMAT), folder=Path(folder) if folder else None)

    @property
    def source_path(self) -> Path:
        """The full graph the deployment was cut from (in the export folder above it)."""
        return Path(self.folder).parent / self.source

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)
