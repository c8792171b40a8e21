"""Where the shipped data lives: the container scripts, the rule tables, the master notebook.

The one place that finds them. In a checkout they sit at the top level next to the package
(DESIGN.md's layout); pyproject.toml maps them into the package (`modelverify_kernel/
container_scripts`, `.../references`, `.../notebooks`), so an installed wheel carries them as
package data, found through importlib.resources. A source checkout (editable install, or the
package on PYTHONPATH) has no such folders inside the package and uses the top-level ones.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

PACKAGE = "modelverify_kernel"
NOTEBOOK = "verify.ipynb"


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
