"""The ONNX export writes through a temp file named as the toolkit's own (`temp_beside`), so the
run folder's stale-temp cleanup removes one a killed export left; a failed export leaves none."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.core.atomic import is_own_temp
from compress.export import onnx_export


class _Stop(Exception):
    pass


def test_the_export_temp_is_the_toolkits_own_and_goes_on_failure(tmp_path, monkeypatch):
    seen: list[Path] = []

    def export(module, args, target, **kwargs):
        seen.append(Path(target))
        Path(target).write_bytes(b"half an export")
        raise _Stop

    monkeypatch.setattr(torch.onnx, "export", export)
    path = tmp_path / "export" / "model.onnx"
    with pytest.raises(_Stop):
        onnx_export._export_atomic(torch.nn.Identity(), (torch.zeros(1),), path)
    assert seen and seen[0].parent == path.parent and is_own_temp(seen[0].name)
    assert list(path.parent.iterdir()) == []
