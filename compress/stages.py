"""The stages after the lottery: export, evaluate, bench, report (each skipped when done)."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def finish_run(recipe, run, progress: bool) -> None:
    log.info("export/evaluate/bench/report: wiring in progress")
