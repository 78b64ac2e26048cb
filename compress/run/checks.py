"""Failed checks: said where they happen, summarised at the end of `compress run`, shown in the
report next to the number they cast doubt on, never only inside a JSON file.

Each check logs ONE warning line where it happens, tagged `extra={"check": NAME}` (plain logging,
so `evaluate/` and `export/` tag theirs without importing `compress`). `compress run` collects the
tagged lines into summary.json `warnings`, each with the stage it was said in (`in_stage`), and
prints them as a "warnings:" block at its end. Across `--resume` a stage skipped as done keeps its
warnings; a stage that runs again drops its stored ones first (so a check that now passes is gone).

Warnings (the command still exits 0; `compress run --strict` turns any of them into exit 1 at
the end, after every file is written):
- parity: the DeepSparse deployment's detections differ from the same deployment on ONNX
  Runtime (eval/deepsparse/parity.json `status: failed`); its mAP is not to be trusted.
- engine_failed: one engine crashed, timed out or could not run (eval or bench) while others ran.
- under_load: a benchmark or a latency profile was timed while other work took more than
  `compress.evaluate.runtimes.protocol.OTHER_WORK_LIMIT` cores: its figures are noisy.
- loaded_profile: a runtime-aware run allocated its zeros from a profile timed under load.
- shortfall: a gradual run ended far short of its modifiers' target sparsity.
- partial_transfer: transfer ticket / mask transfer matched only part of the source.
- deployment_slower: the DeepSparse deployment of the ticket ran slower end to end than ONNX
  Runtime's full graph (small images: too little convolution for the glue it adds).
- int8_accuracy: the INT8 ticket (quantize stage) lost more than 0.02 bbox / segm mAP against
  the fp32 ticket on torch.
- int8_engines: DeepSparse INT8 and ONNX Runtime INT8 bbox mAP differ by more than 0.005.
- int8_zeros: a pruned weight became nonzero in QAT, or is not stored as its zero point in the
  INT8 export.
Errors (exit 1, one line), where the command's whole purpose failed (`CheckFailed`):
- `compress evaluate` whose only engine failed (a crash, or a failed parity check);
- `compress bench` where no requested engine gave a figure (every one failed or was skipped).
Bad input stays exit 2 (`compress.core.errors.UserError`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Optional

from compress.core.checks_names import CHECKS, tag
from compress.core.folders import RunFolder

__all__ = ["CHECKS", "tag", "CheckFailed", "RunWarnings", "collecting", "in_stage", "run_warnings",
           "format_warnings", "parity_note", "SHORTFALL_TOLERANCE"]
_STAGE: ContextVar[Optional[str]] = ContextVar("compress_run_stage", default=None)

SHORTFALL_TOLERANCE = 0.05  # reached sparsity this far (absolute) below the target warns


class CheckFailed(Exception):
    """The command's whole purpose failed (no engine gave a result): exit 1 with one line."""


class RunWarnings(logging.Handler):
    """Appends each tagged warning to the run's summary.json `warnings` (once per message), with
    the stage it was said in (`in_stage`; None outside every stage)."""

    def __init__(self, run: RunFolder):
        super().__init__(level=logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        check = getattr(record, "check", None)
        if not check:
            return
        entry = {"check": check, "message": record.getMessage(), "stage": _STAGE.get()}
        stored = self.run.read_summary().get("warnings") or []
        if entry not in stored:
            self.run.update_summary(warnings=[*stored, entry])


@contextmanager
def collecting(run: RunFolder) -> Iterator[RunWarnings]:
    """Collect tagged warnings into `run` while the block runs."""
    handler = RunWarnings(run)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@contextmanager
def in_stage(run: RunFolder, stage: str) -> Iterator[None]:
    """Run a stage: its warnings stored by an earlier run are dropped first (a stage that runs
    again on `--resume` says its checks anew), the ones said inside are recorded as its own."""
    stored = run.read_summary().get("warnings") or []
    kept = [w for w in stored if not (isinstance(w, dict) and w.get("stage") == stage)]
    if len(kept) != len(stored):
        run.update_summary(warnings=kept)
    token = _STAGE.set(stage)
    try:
        yield
    finally:
        _STAGE.reset(token)


def run_warnings(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The warnings a run recorded (summary.json `warnings`)."""
    return [w for w in summary.get("warnings") or [] if isinstance(w, dict) and w.get("message")]


def format_warnings(warnings: list[dict[str, str]]) -> str:
    """The end-of-run block: one line per failed check ('' when none)."""
    if not warnings:
        return ""
    lines = [f"warnings: {len(warnings)} check(s) failed (summary.json `warnings`)"]
    lines += [f"  - [{w['check']}] {w['message']}" for w in warnings]
    return "\n".join(lines)


def parity_note(parity: dict[str, Any]) -> str:
    """The report's note for a failed DeepSparse parity check ('' when it passed)."""
    if parity.get("status") != "failed":
        return ""
    diff, tol = parity.get("box_max_abs_diff_px"), parity.get("box_tolerance_px")
    if diff is not None and tol is not None and diff > tol:
        return f"parity FAILED: boxes {diff:.3g} px apart (tolerance {tol:g} px) vs ONNX Runtime"
    return f"parity FAILED: {parity.get('reason') or 'see parity.json'}"
