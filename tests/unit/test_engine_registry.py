"""One home for the engine names: evaluate/engines.py. No tuple, list, set or Literal of engine
names anywhere else in compress/, export/ or evaluate/ (a planted one is caught), and the CLI's
choices and the recipe's engine lists are the registry's."""
from __future__ import annotations

import ast
import typing
from pathlib import Path

from click.testing import CliRunner

from compress.cli import cli
from compress.recipe.schema import BenchCfg, EvaluateCfg
from compress.evaluate.engines import (BENCH_ENGINES, DEFAULT_EVALUATE_ENGINES, DEPLOYMENT, ENGINES,
                              EVALUATE_ENGINES, FULL_GRAPH, PREDICT, PREDICT_ENGINES, TICKET,
                              running)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("compress", "export", "evaluate")
REGISTRY = Path("evaluate/engines.py")
# names whose value lists engine-like strings for another concept, each with why
OTHER_CONCEPTS = {
    "PART_RUNTIMES": "what a deployment manifest's part may name as its runtime (the file format)",
}


def _strings(node: ast.AST) -> list[ast.expr] | None:
    """The elements of a tuple / list / set literal or of a Literal[...] subscript, else None."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return node.elts
    if isinstance(node, ast.Subscript):
        name = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", None)
        if name == "Literal":
            return node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return None


def _exempt(tree: ast.AST) -> set[int]:
    """ids of the literals assigned to a name of OTHER_CONCEPTS."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in OTHER_CONCEPTS for t in targets):
                out.update(id(n) for n in ast.walk(node.value))
    return out


def engine_lists(root: Path, names: set[str]) -> list[str]:
    """`path:line: names` for every literal collection naming two or more engines outside the
    registry module."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel == REGISTRY:
                continue
            tree = ast.parse(path.read_text())
            exempt = _exempt(tree)
            for node in ast.walk(tree):  # breadth first: a Literal before its tuple
                elements = _strings(node)
                if elements is None or id(node) in exempt:
                    continue
                if isinstance(node, ast.Subscript):
                    exempt.add(id(node.slice))  # Literal["a", "b"]: counted once
                hits = [e.value for e in elements if isinstance(e, ast.Constant) and e.value in names]
                if len(hits) >= 2:
                    found.append(f"{rel}:{node.lineno}: {', '.join(hits)}")
    return found


def test_no_list_of_engine_names_outside_the_registry():
    found = engine_lists(ROOT, set(ENGINES))
    assert not found, ("engine names listed outside evaluate/engines.py (read them from the "
                       "registry):\n" + "\n".join(found))


def test_a_planted_list_is_caught(tmp_path):
    files = {
        "compress/stages/fake.py": 'CHOICES = ["torch", "deepsparse"]\n',
        "evaluate/runtimes/fake.py": ("from typing import Literal\n\n"
                                      'Engine = Literal["onnxruntime", "openvino-fp32"]\n'),
        "export/fake.py": ('ONE = ("onnxruntime", "full_graph")  # one engine: not a list of them\n'
                           'PART_RUNTIMES = ("onnxruntime", "deepsparse", "torch")\n'
                           'MAP = {"torch": 1, "deepsparse": 2}\n'),
        "evaluate/engines.py": 'ALL = ("torch", "onnxruntime", "deepsparse")\n',
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert engine_lists(tmp_path, set(ENGINES)) == [
        "compress/stages/fake.py:1: torch, deepsparse",
        "evaluate/runtimes/fake.py:3: onnxruntime, openvino-fp32",
    ]


def test_cli_and_recipe_offer_the_registry_engines():
    params = {c.name: {p.name: p for p in c.params} for c in cli.commands.values()}
    assert tuple(params["evaluate"]["engine"].type.choices) == EVALUATE_ENGINES
    assert tuple(params["predict"]["engine"].type.choices) == PREDICT_ENGINES
    assert tuple(params["bench"]["engines"].type.choices) == BENCH_ENGINES
    assert EVALUATE_ENGINES == ("torch", "onnxruntime", "deepsparse")
    assert BENCH_ENGINES == ("onnxruntime", "onnxruntime-cuda", "deepsparse")
    literal = typing.get_args(EvaluateCfg.model_fields["engines"].annotation)[0]
    assert typing.get_args(literal) == EVALUATE_ENGINES
    assert EvaluateCfg().engines == list(DEFAULT_EVALUATE_ENGINES) == ["torch", "onnxruntime"]
    assert BenchCfg().engines == list(BENCH_ENGINES)
    result = CliRunner().invoke(cli, ["bench", "model.onnx", "--engine", "tensorrt"])
    assert result.exit_code == 2 and "'onnxruntime', 'onnxruntime-cuda', 'deepsparse'" in result.output


def test_defaults_by_what_the_model_is():
    assert running(TICKET, PREDICT) == "torch"
    assert running(FULL_GRAPH, PREDICT) == "onnxruntime"
    assert running(DEPLOYMENT, PREDICT) == "deepsparse"
    assert all(not e.needs_gpu or e.provider == "cuda" for e in ENGINES.values())
