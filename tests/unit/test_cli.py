"""`compress --help` and every subcommand's --help show examples."""
from __future__ import annotations

import pytest

from compress.cli import main

SUBCOMMANDS = [["run"], ["export"], ["evaluate"], ["bench"], ["report"], ["predict"], ["data", "synth"]]


def test_main_help_has_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and "compress run recipes/maskrcnn_lth.yaml --smoke" in out


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=["-".join(a) for a in SUBCOMMANDS])
def test_subcommand_help_has_examples(capsys, args):
    assert main([*args, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and f"compress {' '.join(args)}" in out


def test_unknown_flag_is_usage_error(capsys):
    assert main(["run", "--nope"]) == 2
    assert "error:" in capsys.readouterr().err
