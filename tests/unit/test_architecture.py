"""The house rules, checked on every run: no import cycle among the project's modules (imports
inside functions counted), small folders, imports at module top outside the CLI, and a CLI whose
help needs neither torch nor the end-of-life libraries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("compress", "evaluate", "export")
LAZY_ALLOWED = {"compress/cli.py"}  # each command imports its stage when it runs


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in PACKAGES:
                out.append((name, id(node) in inner))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = {dep for dep, _ in _imports(path, modules)}
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_project_imports_at_module_top():
    modules = _modules()
    inside = [f"{path.relative_to(ROOT)} imports {dep}" for name, path in modules.items()
              if str(path.relative_to(ROOT)) not in LAZY_ALLOWED
              for dep, in_function in _imports(path, modules) if in_function]
    assert not inside, "\n".join(inside)


def test_export_and_evaluate_use_only_compress_core():
    bad = [f"{src} -> {dep}" for src, deps in _graph().items() if src.split(".")[0] in ("export", "evaluate")
           for dep in deps if dep.startswith("compress") and not dep.startswith("compress.core")]
    assert not bad, "\n".join(bad)


def test_small_folders():
    for pkg in PACKAGES:
        for folder in [ROOT / pkg, *[p for p in (ROOT / pkg).rglob("*") if p.is_dir()]]:
            count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
            limit = 4 if folder == ROOT / "compress" else 12
            assert count <= limit, f"{folder.relative_to(ROOT)} holds {count} modules (at most {limit})"


def test_cli_help_imports_no_heavy_library():
    code = ("import sys; from compress.cli import main; rc = main(['--help']); "
            "heavy = [m for m in ('torch', 'sparseml', 'deepsparse', 'onnxruntime', 'matplotlib') "
            "if m in sys.modules]; print(heavy); sys.exit(rc or (1 if heavy else 0))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
