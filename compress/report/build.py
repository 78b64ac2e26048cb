"""`compress report RUN [RUN ...]`: report.md, a self-contained report.html and plots/*.png.

Sections, the supplement's analyses in its order: summary table, sparsity vs mAP, ticket vs
controls (with the seed spread), transfer vs direct pruning (A), TIDE and keypoint errors (B),
convergence (C), AP deltas by size and category, disk size and MACs vs sparsity (D), latency per
engine, early-bird IoU, runtime-aware sparsity, and a gallery of predictions by the dense model
and the ticket; under each figure a one-line verdict on the paper's claim where it makes one. Several runs share one table row set / one line per
run. A section whose inputs a run lacks says "not run: ..." instead of failing the report.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from compress.core.errors import UserError
from compress.report.page import Missing, Section, fmt, write_report
from compress.report.run_data import RunData, load_run
from compress.report.sections import SECTIONS

log = logging.getLogger(__name__)


def _labels(roots: list[Path]) -> list[str]:
    names = [r.resolve().name or "run" for r in roots]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def report_command(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write report.md, report.html and plots/ for the runs into `out` (default: the first run
    folder); returns the HTML path."""
    if not run_dirs:
        raise UserError("give at least one run folder", key="RUN")
    runs = [load_run(Path(r), label) for r, label in zip(run_dirs, _labels(list(run_dirs)))]
    out_dir = Path(out) if out is not None else Path(run_dirs[0])
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    sections = [_build(key, title, fn, runs, plot_dir) for key, title, fn in SECTIONS]
    title = "Lottery ticket report: " + ", ".join(r.label for r in runs)
    intro = [_describe(r) for r in runs]
    _, html_path = write_report(out_dir, title, intro, sections)
    print(f"report: {out_dir / 'report.md'} and {html_path}")
    return html_path


def _describe(run: RunData) -> str:
    s = run.summary
    ticket = s.get("ticket") or {}
    return (f"{run.label}: {s.get('name', '?')} ({s.get('arch', '?')} / {s.get('backbone', '?')}, "
            f"method {s.get('method', '?')}, task {s.get('task', '?')}), {len(run.rounds)} round(s); "
            f"ticket = round {ticket.get('round', run.last_round)} at sparsity "
            f"{fmt(ticket.get('sparsity', run.rounds[-1].get('sparsity')))}. Folder: {run.root}")


def _build(key: str, title: str, fn: Callable[[Section, list[RunData], Path], None],
           runs: list[RunData], plot_dir: Path) -> Section:
    section = Section(key, title)
    try:
        fn(section, runs, plot_dir)
    except Missing as err:
        section.missing.append(f"not run: {err}")
    except UserError as err:
        log.warning("report section %s: %s", key, err)
        section.missing.append(f"not available: {err}")
    if not (section.text or section.tables or section.figures or section.missing):
        section.missing.append("not run: no input for this section")
    return section


