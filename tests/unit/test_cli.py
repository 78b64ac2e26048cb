"""`compress --help` and every subcommand's --help show examples; every option has help text;
`compress runs` lists the run folders."""
from __future__ import annotations

import json

import click
import pytest

from compress.cli import cli, main

SUBCOMMANDS = [["run"], ["export"], ["evaluate"], ["bench"], ["report"], ["predict"], ["profile"],
               ["runs"], ["data", "synth"]]


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


def _commands(group=cli, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_is_in_the_examples_test():
    assert sorted(" ".join(p) for p, _ in _commands()) == sorted(" ".join(a) for a in SUBCOMMANDS)


@pytest.mark.parametrize("path,command", list(_commands()), ids=lambda v: "-".join(v) if isinstance(v, tuple) else "")
def test_every_option_has_help(path, command):
    bare = [p.opts[0] for p in command.params
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not bare, f"compress {' '.join(path)}: options without help: {bare}"


def test_runs_lists_each_run_folder(tmp_path, capsys):
    done, half = tmp_path / "maskrcnn_r18_imp-1a2b", tmp_path / "maskrcnn_r18_gradual-3c4d"
    for folder in (done, half):
        folder.mkdir()
    (done / "summary.json").write_text(json.dumps({
        "name": "maskrcnn_lth", "method": "imp", "finished": True,
        "rounds": [{"round": 0, "sparsity": 0.0, "metrics": {"bbox_mAP": 0.3}},
                   {"round": 1, "sparsity": 0.2, "metrics": {"bbox_mAP": 0.28}}],
        "ticket": {"round": 1, "sparsity": 0.2}, "eval": {"torch": {"bbox_mAP": 0.2812}}}))
    (half / "recipe.yaml").write_text("name: maskrcnn_gmp\nlottery:\n  method: gradual\n")
    (tmp_path / "not_a_run").mkdir()
    assert main(["runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines  # header, rule, two runs
    assert lines[0].split() == ["run", "recipe", "method", "sparsity", "bbox", "mAP", "status"]
    assert lines[2].split() == ["maskrcnn_r18_gradual-3c4d", "maskrcnn_gmp", "gradual", "-", "-",
                                "incomplete"]
    assert lines[3].split() == ["maskrcnn_r18_imp-1a2b", "maskrcnn_lth", "imp", "0.2000", "0.2812",
                                "finished"]


def test_runs_of_a_missing_folder_is_bad_input(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
