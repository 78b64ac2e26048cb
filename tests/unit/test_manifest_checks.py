"""The deployment manifest is checked before anything of it runs: tampered copies of a real
deployment (paths outside the folder, a cut-short part, external data elsewhere, wrong types,
an unknown torch op) are one line and exit 2; an export killed while writing its parts leaves
nothing a resume trusts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compress.cli import main
from compress.core.errors import ModelFileError
from compress.evaluate.runtimes.manifest import deployment_intact, read_manifest
from compress.evaluate.runtimes.ort import file_sha256
from compress.export.deploy import build
from tests.support.deployments import images, tiny_deployment


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return tiny_deployment("fasterrcnn", tmp_path_factory.mktemp("deploy"))[0]


@pytest.fixture
def export(original, tmp_path):
    """A fresh copy of the export folder for each tampering."""
    return shutil.copytree(original, tmp_path / "export")


def _edit(export, change):
    path = export / "deploy" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _refused(export, capsys, match):
    with pytest.raises(ModelFileError, match=match):
        read_manifest(export)
    assert not deployment_intact(export / "deploy")
    code = main(["-q", "bench", str(export), "--engine", "onnxruntime", "--iterations", "1",
                 "--warmup", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_intact_deployment_reads(export):
    assert deployment_intact(export / "deploy")
    manifest = read_manifest(export)
    assert all(len(p.sha256) == 64 and p.bytes > 0 for p in manifest.parts)


@pytest.mark.parametrize("name", ["../../outside/x.onnx", "/etc/passwd", "../model.onnx"])
def test_a_part_outside_the_folder_is_refused(export, capsys, name):
    _edit(export, lambda m: m["parts"][0].update(file=name))
    _refused(export, capsys, "points outside")


def test_a_source_outside_the_export_folder_is_refused(export, capsys):
    _edit(export, lambda m: m.update(source="../../elsewhere/model.onnx"))
    _refused(export, capsys, "source: .* points outside")


def test_a_part_cut_short_is_refused(export, capsys):
    part = export / "deploy" / json.loads((export / "deploy" / "manifest.json").read_text())["parts"][1]["file"]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    _refused(export, capsys, "changed or was cut short")


def test_external_data_outside_the_folder_is_refused(export, capsys, tmp_path):
    manifest = json.loads((export / "deploy" / "manifest.json").read_text())
    entry = manifest["parts"][1]
    path = export / "deploy" / entry["file"]
    model = onnx.load(str(path))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data) or np.prod(t.dims))
    (tmp_path / "secret.bin").write_bytes(numpy_helper.to_array(tensor).tobytes())
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry_loc = tensor.external_data.add()
    entry_loc.key, entry_loc.value = "location", "../../../secret.bin"
    onnx.save(model, str(path))
    entry["sha256"] = file_sha256(path)  # a tamperer who also fixes the checksum
    (export / "deploy" / "manifest.json").write_text(json.dumps(manifest))
    _refused(export, capsys, "outside the model's folder")


@pytest.mark.parametrize("change,match", [
    (lambda m: m.update(parts="all"), "parts: expected"),
    (lambda m: m["parts"][0].update(runtime="shell"), "runtime: 'shell'"),
    (lambda m: m["parts"][-1].update(runtime="torch", op="os.system"), "op: 'os.system'"),
    (lambda m: m["parts"][0].pop("inputs"), "inputs: expected"),
    (lambda m: m.update(canvas={"height": "64"}), "canvas"),
    (lambda m: m["parts"][1].update(compiled=[{"inputs": "x"}]), "compiled"),
])
def test_wrong_types_are_one_line(export, capsys, change, match):
    _edit(export, change)
    _refused(export, capsys, match)


def test_bad_json_is_one_line(export, capsys):
    (export / "deploy" / "manifest.json").write_text("{not json")
    _refused(export, capsys, "not a JSON manifest")


@pytest.mark.parametrize("killed_at", [0, 1, 3])
def test_export_killed_while_writing_parts_leaves_nothing_to_trust(export, monkeypatch, killed_at):
    """A kill (here: an error) while part `killed_at` is written: the old manifest is gone
    before the first part, the new one is never written, so the export is not done."""
    assert deployment_intact(export / "deploy")
    written = []
    real = build.write_bytes

    def dies(path, data):
        if len(written) == killed_at:
            raise KeyboardInterrupt("killed")
        written.append(path)
        real(path, data)

    monkeypatch.setattr(build, "write_bytes", dies)
    with pytest.raises(KeyboardInterrupt):
        build.build_deployment(export / "model.onnx", export / "deploy", canvas_size=64,
                               roi_count=100, max_detections=100, images=images(1))
    assert not (export / "deploy" / "manifest.json").exists()
    assert not deployment_intact(export / "deploy")
    assert not [p for p in (export / "deploy").iterdir() if p.name.endswith(".tmp")]


def test_the_manifest_knows_every_torch_op_the_runner_has():
    from compress.evaluate.runtimes import manifest, pipeline

    assert set(manifest.TORCH_OPS) == set(pipeline.TORCH_OPS)
