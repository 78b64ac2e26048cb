"""The house rules, checked on every run: no import cycle among the project's modules (imports
inside functions counted) nor among its packages (compress.report, compress.stages, ...), small
folders, imports at module top outside the CLI, and a CLI whose help needs neither torch nor the
end-of-life libraries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# folder -> import name: export/ and evaluate/ install as compress.export and compress.evaluate, so
# they cannot collide with other distributions' top-level packages (Hugging Face's `evaluate`)
PACKAGES = {"compress": "compress", "evaluate": "compress.evaluate", "export": "compress.export"}
MOVED = ("compress.evaluate", "compress.export")
LAZY_ALLOWED = {"compress/cli.py"}  # each command imports its stage when it runs
# Package imports that run up the floors today, each with why it is there. Every other package
# edge must leave the package graph acyclic, so a new cycle fails; an edge here that is gone must
# leave the list (the test says so).
KNOWN_BACK_EDGES = {
    ("compress.run", "compress.stages"):
        "run/pipeline.py (`compress run`) walks the stages, which use run/loaded.py, checks.py, "
        "setup.py and torch_eval.py",
    ("compress.evaluate.metrics", "compress.evaluate.analysis"):
        "metrics/results_file.py writes keypoint_errors.json with analysis/keypoint_errors.py",
}


def _modules(root: Path = ROOT, packages: dict[str, str] | tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    found = {}
    named = packages if isinstance(packages, dict) else {p: p for p in packages}
    for folder, name in named.items():
        for path in (root / folder).rglob("*.py"):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join((name, *parts))] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    roots = {name.split(".")[0] for name in modules}
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
            if name and name.split(".")[0] in roots:
                out.append((name, id(node) in inner))
    return out


def _graph(root: Path = ROOT, packages: dict[str, str] | tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    modules = _modules(root, packages)
    graph = {}
    for name, path in modules.items():
        deps = {dep for dep, _ in _imports(path, modules)}
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def _package(module: str) -> str:
    """A module's package: `compress.report.sections` -> `compress.report`,
    `compress.export.deploy.build` -> `compress.export.deploy`; a top-level module (`compress.cli`,
    `compress.export.onnx_export`) belongs to its top package."""
    parts = module.split(".")
    depth = 3 if ".".join(parts[:2]) in MOVED else 2
    return ".".join(parts[:depth]) if len(parts) > depth else ".".join(parts[:depth - 1])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        mine = _package(module)
        out.setdefault(mine, set()).update(p for p in map(_package, deps) if p != mine)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first node repeated at the end) per back edge a depth-first walk meets."""
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

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
    return cycles


def package_cycles(graph: dict[str, set[str]],
                   allowed: dict[tuple[str, str], str] | None = None) -> list[list[str]]:
    """Cycles among the packages once the `allowed` edges are taken out."""
    packages = package_graph(graph)
    kept = {src: {dst for dst in deps if (src, dst) not in (allowed or {})}
            for src, deps in packages.items()}
    return find_cycles(kept)


def _fmt(cycles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in cycles)


def test_no_import_cycle():
    cycles = find_cycles(_graph())
    assert not cycles, "import cycles: " + _fmt(cycles)


def test_no_package_cycle_beyond_the_known_back_edges():
    graph = _graph()
    cycles = package_cycles(graph, KNOWN_BACK_EDGES)
    assert not cycles, "package import cycles: " + _fmt(cycles)
    packages = package_graph(graph)
    gone = [f"{src} -> {dst}" for src, dst in KNOWN_BACK_EDGES if dst not in packages.get(src, ())]
    assert not gone, f"no longer imported, drop from KNOWN_BACK_EDGES: {', '.join(gone)}"


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_an_injected_package_cycle_is_caught(tmp_path):
    """Two packages importing each other through different modules: no module cycle, one
    package cycle; taking the edge out as known hides it, a new edge does not hide."""
    _write_tree(tmp_path, {
        "app/__init__.py": "", "app/a/__init__.py": "", "app/b/__init__.py": "",
        "app/c/__init__.py": "", "app/a/low.py": "X = 1\n",
        "app/a/high.py": "from app.b.mid import Y\n",
        "app/b/mid.py": "from app.a.low import X\nY = X\n",
        "app/c/top.py": "import app.a.high\n",
    })
    graph = _graph(tmp_path, ("app",))
    assert graph["app.b.mid"] == {"app.a.low"} and not find_cycles(graph)
    assert package_cycles(graph) == [["app.a", "app.b", "app.a"]]
    assert not package_cycles(graph, {("app.a", "app.b"): "known"})
    (tmp_path / "app/a/low.py").write_text("import app.c.top\nX = 1\n")  # a -> c -> a, new
    cycles = package_cycles(_graph(tmp_path, ("app",)), {("app.a", "app.b"): "known"})
    assert cycles == [["app.a", "app.c", "app.a"]]


def test_project_imports_at_module_top():
    modules = _modules()
    inside = [f"{path.relative_to(ROOT)} imports {dep}" for name, path in modules.items()
              if str(path.relative_to(ROOT)) not in LAZY_ALLOWED
              for dep, in_function in _imports(path, modules) if in_function]
    assert not inside, "\n".join(inside)


def test_export_and_evaluate_use_only_compress_core():
    bad = [f"{src} -> {dep}" for src, deps in _graph().items() if src.startswith(MOVED)
           for dep in deps if not dep.startswith(("compress.core", *MOVED))]
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


def test_no_top_level_export_or_evaluate_import():
    """From the repository root `import export` would still work (the folder is on sys.path), load
    a second copy of the module, and fail once installed: every import says compress.export /
    compress.evaluate."""
    bad = []
    for path in [*(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py")),
                 *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("export", "evaluate")]
    assert not bad, "\n".join(bad)


def test_installed_packages_are_the_folders_under_compress():
    """pyproject.toml lists every package folder under its import name, and nothing else."""
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {name: folder for folder, name in PACKAGES.items() if name != folder}
    folders = sorted(".".join((name, *init.parent.relative_to(ROOT / folder).parts))
                     for folder, name in PACKAGES.items() for init in (ROOT / folder).rglob("__init__.py"))
    assert sorted(config["packages"]) == folders
    assert all(name.split(".")[0] == "compress" for name in config["packages"])
