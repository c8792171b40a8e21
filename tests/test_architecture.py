"""The package's shape (issue 21): no import cycle, `analysis/` never imports the driver, and no
file or function grows past what a reader takes in at once. Read from the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelverify_kernel"
DRIVER = {"pipeline", "runs", "target", "model", "probe", "report", "batch", "__main__", "bisect"}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 800, 60
# What analysis/ may import besides itself: the records it judges, the vocabulary, and the leaf
# that finds the shipped references/ folder (it imports nothing of the package).
ANALYSIS_MAY_IMPORT = {"records", "vocabulary", "resources"}
SCRIPTS = PACKAGE.parent / "container_scripts"


def _modules() -> dict[str, Path]:
    """Dotted name under the package ("analysis.judge", "pipeline") -> file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports, at any depth of its code (lazy imports count)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("modelverify_kernel"):
                stem = node.module.removeprefix("modelverify_kernel").lstrip(".")
            else:
                continue
            for alias in node.names:
                full = f"{stem}.{alias.name}".strip(".")
                found.add(full if full in known else stem)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("modelverify_kernel."):
                    found.add(alias.name.removeprefix("modelverify_kernel."))
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_analysis_imports_nothing_of_the_driver():
    for name, deps in _graph().items():
        if name.startswith("analysis"):
            assert not {d for d in deps if d.split(".")[0] in DRIVER}, (name, deps)
            outside = {d for d in deps if d.split(".")[0] != "analysis"}
            assert outside <= ANALYSIS_MAY_IMPORT, (name, outside - ANALYSIS_MAY_IMPORT)


def test_the_leaf_modules_import_nothing_of_the_package():
    graph = _graph()
    for leaf in ("records", "vocabulary", "resources"):
        assert graph[leaf] <= {"vocabulary"} - {leaf}, (leaf, graph[leaf])


def test_no_container_script_imports_the_cli():
    """The scripts are copied into someone else's container: none may reach for the package's
    command line (diff_analysis.py is a thin front over pair_verdict)."""
    for path in SCRIPTS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n.endswith("__main__") for n in names), path


def test_the_runner_never_judges():
    deps = _graph()["runs"]
    assert "classify" not in deps and not any(d.startswith("analysis") for d in deps), deps


def test_files_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_FILE_LINES:
            too_long.append(f"{path.name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long
