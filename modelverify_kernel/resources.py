"""Where the shipped data lives: the container scripts, the rule tables, the master notebook.

The one place that finds them. In a checkout they sit at the top level next to the package
(DESIGN.md's layout); pyproject.toml maps them into the package (`modelverify_kernel/
container_scripts`, `.../references`, `.../notebooks`), so an installed wheel carries them as
package data, found through importlib.resources. A source checkout (editable install, or the
package on PYTHONPATH) has no such folders inside the package and uses the top-level ones.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import ModuleType

PACKAGE = "modelverify_kernel"
NOTEBOOK = "verify.ipynb"
SESSION_HELPER = "run_in_session.py"


@cache
def _folder(name: str) -> Path:
    """A real folder on disk: scripts are copied into targets and run by other Pythons."""
    shipped = files(PACKAGE) / name
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"{name}/ is neither shipped in the installed {PACKAGE} package ({shipped}) nor next to it "
        f"({checkout}); reinstall model-verify from a wheel or a checkout (pip install, not a zip import)."
    )


def scripts_dir() -> Path:
    """`container_scripts/`: the standalone CLIs copied into every target."""
    return _folder("container_scripts")


def references_dir() -> Path:
    """`references/`: the Markdown rule tables the classifier and the comparison parse."""
    return _folder("references")


def notebook_path() -> Path:
    """`notebooks/verify.ipynb`: the master notebook `model-verify run` executes."""
    return _folder("notebooks") / NOTEBOOK


@cache
def session_helper() -> ModuleType:
    """`container_scripts/run_in_session.py` loaded as a module: the one implementation of the
    process session and of killing with grace (`terminate`, `kill_session`, `kill_trees`,
    `KILL_GRACE_S`).

    The script runs standalone inside containers (standard library only); the local target and
    the batch load the same file rather than keep a second copy.
    """
    spec = importlib.util.spec_from_file_location(
        "modelverify_run_in_session", scripts_dir() / SESSION_HELPER
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
