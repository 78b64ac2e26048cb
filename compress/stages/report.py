"""The report stage: report.md, report.html and plots/ of the run (always rendered afresh)."""
from __future__ import annotations

from compress.recipe.schema import Recipe
from compress.report.build import report_command
from compress.core.folders import RunFolder
from compress.stages.base import StageContext


class ReportStage:
    name = "report"

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def done(self, run: RunFolder) -> bool:
        return False  # cheap, and it reflects every other stage: rendered on every run

    def run(self, ctx: StageContext) -> None:
        report_command([ctx.run.root], out=None)
