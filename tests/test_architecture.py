"""The package's shape (issue 21): no import cycle, `analysis/` never imports the driver, and no
file or function grows past what a reader takes in at once. Read from the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelverify_kernel"
DRIVER = {"pipeline", "runs", "target", "model", "probe", "report", "batch", "__main__", "bisect"}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 800, 60
# Files still being reshaped by other parts of issue 21; each leaves this list when it is done.
NOT_YET_SIZED = {"classify.py", "batch.py", "target.py", "params.py", "__main__.py"}
# Cycles another part of issue 21 is removing (run_notebook moves to a module of its own).
PENDING_CYCLES = [{"batch", "__main__"}]


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
                if set(cycle) not in PENDING_CYCLES:
                    pytest.fail("import cycle: " + " -> ".join(cycle))
                continue
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


def test_the_runner_never_judges():
    deps = _graph()["runs"]
    assert "classify" not in deps and not any(d.startswith("analysis") for d in deps), deps


def test_files_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in NOT_YET_SIZED:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_FILE_LINES:
            too_long.append(f"{path.name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long
