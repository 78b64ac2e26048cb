"""The ordered stages after the lottery: export, evaluate, quantize, MACs, bench, report.

Each writes its own part of the run folder and records itself in summary.json; a stage whose result
the folder already holds is skipped (this is where `--resume` skips, for every stage).
"""
from __future__ import annotations

import logging

from compress.run.checks import in_stage
from compress.stages.base import Stage, StageContext
from compress.stages.bench import BenchStage, MacsStage
from compress.stages.evaluate import EvaluateStage
from compress.stages.export import ExportStage
from compress.stages.quantize import QuantizeStage
from compress.stages.report import ReportStage

log = logging.getLogger(__name__)

STAGES: tuple[Stage, ...] = (ExportStage(), EvaluateStage(), QuantizeStage(), MacsStage(), BenchStage(),
                             ReportStage())


def run_stages(ctx: StageContext, stages: tuple[Stage, ...] = STAGES) -> None:
    """Run every enabled stage that is not done yet, in order."""
    for stage in stages:
        if not stage.enabled(ctx.recipe):
            continue
        if stage.done(ctx.run):
            log.info("%s: done, skipped", stage.name)
            continue
        with in_stage(ctx.run, stage.name):
            record = stage.run(ctx)
        if record is not None:
            ctx.run.update_summary(**{stage.name: record})
