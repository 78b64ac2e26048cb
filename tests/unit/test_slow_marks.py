"""A unit test that starts a long-lived process (subprocess.Popen) is marked `slow`, so the quick
loop (`pytest -m "not slow"`) never waits on one (pyproject.toml defines the marker)."""
from __future__ import annotations

import ast
from pathlib import Path

UNIT = Path(__file__).resolve().parent


def _is_slow(node: ast.AST) -> bool:
    return "mark.slow" in ast.unparse(node)


def _starts_process(function: ast.FunctionDef) -> bool:
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == "Popen" for node in ast.walk(function))


def unmarked_process_tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    if any(isinstance(node, ast.Assign) and "pytestmark" in ast.unparse(node.targets[0])
           and _is_slow(node.value) for node in tree.body):
        return []
    return [f"{path.name}::{node.name}" for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test")
            and _starts_process(node) and not any(map(_is_slow, node.decorator_list))]


def test_the_finder_sees_an_unmarked_popen_test(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("import subprocess, pytest\n"
                      "def test_a():\n    subprocess.Popen(['true'])\n"
                      "@pytest.mark.slow\ndef test_b():\n    subprocess.Popen(['true'])\n"
                      "def test_c():\n    pass\n")
    assert unmarked_process_tests(sample) == ["test_sample.py::test_a"]


def test_every_unit_test_starting_a_process_is_marked_slow():
    found = [name for path in sorted(UNIT.glob("test_*.py")) for name in unmarked_process_tests(path)]
    assert found == []
