"""`compress report` on a real smoke run: every section present, every plot a real picture, and the
HTML renders in headless Chromium without console errors (a screenshot is taken).

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-separated
JSON on fds 3 and 4), so no websocket client is needed. Without /usr/bin/chromium (Debian package
`chromium`) the browser test is skipped with a reason; everything else runs.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.cli import main
from compress.report.sections import SECTIONS
from compress.report.build import report_command

SMOKE_ARGS = ["--set", "model.backbone=tiny", "--set", "model.min_size=64", "--set", "model.max_size=64",
              "--set", "data.synthetic.image_size=64", "--set", "data.synthetic.train_images=16",
              "--set", "data.synthetic.val_images=6", "--set", "train.iterations=6",
              "--set", "train.batch_size=2", "--set", "lottery.rounds=1", "--set", "lottery.rewind=2it",
              "--set", "train.lr_steps=[5it]", "--set", "train.warmup_iters=2",
              "--set", "bench.iterations=3", "--set", "bench.warmup=1"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def smoke_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `compress run --smoke` per test session (shared by test_report and test_predict)."""
    root = tmp_path_factory.getbasetemp() / "smoke_run"
    if not (root / "summary.json").is_file() or "bench" not in json.loads((root / "summary.json").read_text()):
        torch.set_num_threads(1)
        shutil.rmtree(root, ignore_errors=True)
        code = main(["-q", "run", "recipes/maskrcnn_lth.yaml", "--smoke", "--out", str(root), *SMOKE_ARGS])
        assert code == 0
    return root


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
    row = next(line for line in size_part.splitlines() if line.startswith(f"| {run_dir.name} | 1 | "))
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
class DevTools:
    """A minimal DevTools protocol client over --remote-debugging-pipe."""

    def __init__(self, user_data_dir: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        high = [os.dup(fd) for fd in (to_chrome_r, from_chrome_w)]

        def wire() -> None:  # in the child: its fd 3 reads commands, fd 4 writes replies
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", f"--user-data-dir={user_data_dir}",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=wire, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_chrome_r, from_chrome_w, *high):
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, timeout_s: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout_s: float = 30) -> dict:
        deadline = time.monotonic() + timeout_s
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def console_problems(events: list[dict]) -> list[str]:
    problems = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            problems.append(details.get("exception", {}).get("description") or details.get("text", "?"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            problems.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            problems.append(params["entry"].get("text", "")[:300])
    return problems


def render(html_path: Path, screenshot: Path, user_data_dir: Path) -> tuple[list[str], dict]:
    """Load the page; return its console problems and its images' decode state; save a screenshot."""
    tools = DevTools(user_data_dir)
    try:
        target = next(t for t in tools.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = tools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            tools.call(f"{domain}.enable", session)
        tools.call("Emulation.setDeviceMetricsOverride", session, width=1200, height=3000,
                   deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", session, url=html_path.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        check = ("JSON.stringify({n: document.images.length, broken: [...document.images].filter("
                 "i => !i.complete || i.naturalWidth === 0).length, sections: document.querySelectorAll("
                 "'section').length, height: document.documentElement.scrollHeight})")
        state = json.loads(tools.call("Runtime.evaluate", session, expression=check)["result"]["value"])
        shot = tools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=False)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return console_problems(tools.events), state
    finally:
        tools.close()


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
