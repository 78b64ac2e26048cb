"""A stage that runs again (`--resume`) replaces its stored warnings: a check that now passes is
gone (so `--strict` exits 0), a number that changed is not kept twice; other stages keep theirs."""
from __future__ import annotations

import logging
from types import SimpleNamespace

from compress.run.checks import collecting, run_warnings, tag
from compress.core.folders import RunFolder
from compress.stages.sequence import run_stages

log = logging.getLogger("stage_test")


class _Stage:
    def __init__(self, name: str, messages: list[str]):
        self.name, self.messages = name, messages

    def enabled(self, recipe) -> bool:
        return True

    def done(self, run) -> bool:
        return False

    def run(self, ctx):
        for message in self.messages:
            log.warning(message, extra=tag("under_load"))
        return None


def _messages(run: RunFolder) -> list[tuple[str, str]]:
    return [(w["stage"], w["message"]) for w in run_warnings(run.read_summary())]


def test_a_stage_run_again_drops_its_old_warnings(tmp_path):
    run = RunFolder(tmp_path)
    ctx = SimpleNamespace(recipe=None, run=run)
    with collecting(run):
        run_stages(ctx, (_Stage("bench", ["bench: 1.3 cores of other work"]),
                         _Stage("evaluate", ["evaluate: timed under load"])))
    assert _messages(run) == [("bench", "bench: 1.3 cores of other work"),
                              ("evaluate", "evaluate: timed under load")]
    with collecting(run):  # --resume: bench runs again and is timed under load again
        run_stages(ctx, (_Stage("bench", ["bench: 1.7 cores of other work"]),))
    assert _messages(run) == [("evaluate", "evaluate: timed under load"),
                              ("bench", "bench: 1.7 cores of other work")]
    with collecting(run):  # and once more, on an idle machine: the check passes
        run_stages(ctx, (_Stage("bench", []),))
    assert _messages(run) == [("evaluate", "evaluate: timed under load")]
