"""The shipped master notebook run through papermill: what `model-verify run` and each batch cell do.

Its own module so that the CLI (`__main__`) and the batch's cell processes share it without
importing each other.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UserError
from .options import OPTION
from .resources import notebook_path


def executed_notebook_path(parameters: Mapping[str, Any], cwd: str | None) -> Path:
    """Where the executed notebook goes by default: OUTPUT_DIR/verify.ipynb under `cwd`."""
    return (
        Path(cwd or ".")
        / str(parameters.get("output_dir") or OPTION["output_dir"].default)
        / "verify.ipynb"
    )


def run_notebook(
    parameters: Mapping[str, Any],
    output: str | None,
    cwd: str | None,
    prepare_only: bool = False,
) -> int:
    """Execute the notebook with these parameters, as the README's papermill command does.

    0 when it ran to its end; 1 when a cell stopped it (a refused parameter, fail_on), with one
    line on stderr naming the cell and the executed notebook.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out = Path(output) if output else executed_notebook_path(parameters, cwd)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"Cannot create {out.parent} for the executed notebook ({exc.strerror}); "
            "give a writable output_dir or --output-notebook."
        ) from None
    try:
        papermill.execute_notebook(
            str(notebook_path()),
            str(out),
            parameters=dict(parameters),
            cwd=cwd,
            prepare_only=prepare_only,
        )
    except PapermillExecutionError as exc:
        print(
            f"error: the notebook stopped in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
            f"the executed notebook is {out}",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {out}")
    return 0


def notebook_help() -> int:
    """The shipped notebook's parameters, as `papermill --help-notebook` reads them."""
    import papermill

    for p in papermill.inspect_notebook(str(notebook_path())).values():
        print(f"  {p['name']}: {p['inferred_type_name']} (default {p['default']})  {p['help']}")
    return 0
