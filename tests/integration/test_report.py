"""`compress report` on a real smoke run: every section present, every plot a real picture, and the
HTML renders in headless Chromium without console errors (a screenshot is taken).

Chromium is driven by tests/support/devtools.py. Without /usr/bin/chromium (Debian package
`chromium`) the browser test is skipped with a reason; everything else runs.
"""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.devtools import CHROMIUM, render
from support.smoke import smoke_run_dir

from compress.cli import main
from compress.report.build import report_command
from compress.report.sections import SECTIONS
from compress.report.page import _md_cell


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    report_command([run_dir], out=out)
    return out


def png_is_a_picture(data: bytes) -> None:
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert image.shape[0] > 50 and image.shape[1] > 50
    packed = image[..., 0].astype(np.uint32) << 16 | image[..., 1].astype(np.uint32) << 8 | image[..., 2]
    assert len(np.unique(packed)) > 10, "a single-colour (empty) image"


def test_every_section_and_plot(report: Path) -> None:
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for key, title, _ in SECTIONS:
        assert f"## {title}" in md and f'<section id="{key}">' in html
    section_text = {key: html.split(f'<section id="{key}">')[1].split("</section>")[0] for key, _, _ in SECTIONS}
    for key in ("summary", "sparsity-map", "convergence", "tide", "ap-deltas", "size-macs", "latency",
                "early-bird", "gallery"):
        assert "<img" in section_text[key] or key == "summary", key
    assert "not run" in section_text["keypoints"]  # a Mask R-CNN run has no keypoints
    pngs = sorted((report / "plots").glob("*.png"))
    assert len(pngs) >= 9
    for png in pngs:
        png_is_a_picture(png.read_bytes())
    linked = re.findall(r"\]\((plots/[^)]+\.png)\)", md)
    assert linked and all((report / p).is_file() for p in linked)


def test_html_is_self_contained(report: Path) -> None:
    html = (report / "report.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), "external reference"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 9
    for encoded in images:
        png_is_a_picture(base64.b64decode(encoded))
    assert "<script" not in html


def test_summary_numbers_match_the_run(run_dir: Path, report: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    md = (report / "report.md").read_text()
    for record in summary["rounds"]:
        assert f"{record['metrics']['bbox_mAP']:.4f}" in md
        assert f"{record['sparsity']:.4f}" in md
    # effective MACs of the last round, from masks x one counting pass, equal the bench stage's count
    assert f"{summary['macs']['effective'] / 1e9:.4f}" in md
    assert f"{summary['export']['compact_bytes'] / 2**20:.3f}" in md
    # the per-round bound from the ticket's mask agrees with the exported file's measured bound
    # (parameters vs ONNX initializers: BatchNorm folded into the convs is the only difference)
    size_part = md.split("## Disk size")[1]
    label = _md_cell(run_dir.name)  # report.md escapes Markdown specials (smoke\\_run)
    row = next(line for line in size_part.splitlines() if line.startswith(f"| {label} | 1 | "))
    bound_mib = float(row.split("|")[5])
    assert abs(bound_mib - summary["export"]["bound_bytes"] / 2**20) / bound_mib < 0.02


def test_two_runs_and_missing_inputs(run_dir: Path, tmp_path: Path) -> None:
    """A second run without export / eval / bench: those sections say 'not run' for it."""
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("export", "eval", "bench", "plots",
                                                                  "report.*", "metrics.jsonl"))
    summary = json.loads((bare / "summary.json").read_text())
    for key in ("export", "bench", "eval", "macs"):
        summary.pop(key, None)
    (bare / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "both"
    assert main(["report", str(run_dir), str(bare), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "not run (bare): benchmark" in md
    assert "not run (bare)" in md.split("## TIDE")[1].split("## ")[0]
    assert "not run (bare)" in md.split("## Convergence")[1].split("## ")[0]
    assert md.count("| bare | 1 |") >= 2  # summary table and size table rows for the second run


def test_bad_run_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a finished run" in err[0]


# ----------------------------------------------------------------- headless Chromium (DevTools)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    shot = report / "screenshot.png"
    problems, state = render(report / "report.html", shot, tmp_path / "chromium-profile")
    assert problems == []
    assert state["sections"] == len(SECTIONS)
    assert state["n"] >= 9 and state["broken"] == 0
    image = Image.open(shot)
    assert image.size == (1200, 3000)
    png_is_a_picture(shot.read_bytes())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_browser_check_catches_errors(tmp_path: Path) -> None:
    """The console check itself: a page with a script error and a missing image fails it."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="missing.png"><script>undefinedFunction();</script></body></html>')
    problems, state = render(page, tmp_path / "bad.png", tmp_path / "profile")
    assert any("undefinedFunction" in p for p in problems)
    assert any("Failed to load resource" in p for p in problems)
    assert state["broken"] == 1
