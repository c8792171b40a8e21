"""Step 1 of the data flow: the notebook's parameters as one validated, frozen object.

Every parameter is checked here, before anything starts, and a bad one is refused with a
sentence that names it and shows a correct example.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import field, fields, make_dataclass
from pathlib import Path
from typing import Any

from .errors import ParameterError
from .options import GROUPS, OPTIONS, PARAMETER_NAMES, Option, Required

# A hub model ID: "org/name" (ModelScope and Hugging Face share the form).
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def _dataclass_field(option: Option) -> tuple[str, Any, Any]:
    """An option as a field of Params: a required one has no default, a dict one a fresh one."""
    if isinstance(option.kind, Required):
        return option.name, Any, field()
    if isinstance(option.default, dict):
        return option.name, Any, field(default_factory=dict)
    return option.name, Any, field(default=option.default)


ParamsFields = make_dataclass("ParamsFields", [_dataclass_field(o) for o in OPTIONS], frozen=True)
ParamsFields.__module__ = __name__


class Params(ParamsFields):
    """What one verification run was asked to do (recorded whole in the report); one field per
    entry of `options.OPTIONS`, in its order."""

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir).resolve()

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def validate(values: Mapping[str, Any]) -> Params:
    """Check every parameter, in the table's order, and build the frozen `Params`."""
    return Params(**{o.name: o.check(values.get(o.name, o.default)) for o in OPTIONS})


# Names IPython itself puts in a notebook's namespace.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_PARAMETER_TYPES = (str, int, float, bool, list, dict, type(None))


PAPERMILL_CELL_HEADER = "# Parameters"  # the first line of the cell papermill injects


def _parameter_cell_names(history: list[Any]) -> set[str] | None:
    """Names assigned in the last parameters cell the kernel ran: papermill's injected cell, or the
    notebook's own tagged one when it ran alone; None when the kernel ran neither."""
    for source in reversed(history):
        if not isinstance(source, str):
            continue
        first = source.lstrip().split("\n", 1)[0].strip()
        if first != PAPERMILL_CELL_HEADER and not first.startswith(PAPERMILL_CELL_HEADER + ":"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return None
        names = set()
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        return names
    return None


def unknown_parameters(namespace: Mapping[str, Any]) -> list[str]:
    """Names given as parameters that are no parameter: a mistyped `-p name value`.

    In a kernel the parameters are what the last parameters cell assigned (IPython keeps every
    cell it ran in `In`), so the notebook's own variables — `v`, `comparisons`, … — never count,
    and the notebook re-executes in the same kernel. Without that history (a plain namespace),
    every data name that is not private counts.
    """
    history = namespace.get("In")
    given = _parameter_cell_names(history) if isinstance(history, list) else None
    if given is not None:
        return sorted(k for k in given if k not in PARAMETER_NAMES)
    return sorted(
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in PARAMETER_NAMES
        and k not in _KERNEL_NAMES
        and isinstance(v, _PARAMETER_TYPES)
    )


def from_namespace(namespace: Mapping[str, Any]) -> Params:
    """Build `Params` from the notebook's globals; a name that is no parameter is refused."""
    unknown = unknown_parameters(namespace)
    if unknown:
        close = difflib.get_close_matches(unknown[0], PARAMETER_NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ParameterError(
            f"Unknown parameter {unknown[0]}{hint}: it would be ignored; "
            f"`model-verify run --help-notebook` (or `papermill --help-notebook notebooks/verify.ipynb`) lists the parameters."
        )
    return validate({name: namespace[name] for name in PARAMETER_NAMES if name in namespace})


# -- what derives from the table: the notebook's parameters cell and docs/parameters.md ---------

CHECKOUT = Path(__file__).resolve().parent.parent
DOCS_PAGE = CHECKOUT / "docs" / "parameters.md"
WRITE_COMMAND = "python -m modelverify_kernel.params --write"
CELL_HEADER = (
    "# Parameters: papermill overrides these. `papermill --help-notebook notebooks/verify.ipynb` lists\n"
    "# them with type, default and help; docs/parameters.md explains each one. Generated from\n"
    f"# modelverify_kernel/options.py by `{WRITE_COMMAND}`: edit the table, not this cell.\n"
)
PAGE_INTRO = """\
# Parameters

<!-- Generated from modelverify_kernel/options.py by `{command}`;
a unit test fails when this page differs from the table. Edit the table, not this page. -->

Every parameter of the notebook `notebooks/verify.ipynb`, as papermill (`-p NAME VALUE`,
`-r NAME VALUE` for a string, `-y YAML` for lists and dicts), `model-verify run` (the same
options) and a batch matrix's `parameters` sections (docs/batch.md) take them.

`papermill --help-notebook notebooks/verify.ipynb` (or `model-verify run --help-notebook`) lists
the same, from the typed parameters cell. A bad parameter — and a name that is no parameter
(`-p tp 8`) — stops the notebook in its first code cell with one sentence naming it (e.g.
`ParameterError: Parameter model_path is required: …`); nothing else starts and papermill exits 1.
Secrets are refused as parameters (papermill writes parameters into the executed notebook): set
`HF_TOKEN` and friends in the environment of the target instead.
"""


def _literal(value: Any) -> str:
    """A default as the notebook writes it: JSON-like lists and dicts, double-quoted strings."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)


def _annotation(option: Option) -> str:
    typed = option.notebook_type
    return typed if typed in ("str", "int", "float", "bool") else json.dumps(typed)


def grouped_options() -> list[tuple[str, list[Option]]]:
    """The table by group, in GROUPS' order (the cell and the page); Params keeps table order."""
    return [(group, [o for o in OPTIONS if o.group == group]) for group in GROUPS]


def notebook_cell_source() -> str:
    """The notebook's `parameters` cell: one typed line per parameter, its help as the comment
    papermill's `--help-notebook` shows."""
    lines = []
    for group, options in grouped_options():
        lines.append(f"# -- {group}")
        for o in options:
            lines.append(f"{o.name}: {_annotation(o)} = {_literal(o.default)}  # {o.help}")
    return CELL_HEADER + "\n".join(lines)


def docs_page() -> str:
    """docs/parameters.md: a table per group of name, type, default and meaning."""
    parts = [PAGE_INTRO.format(command=WRITE_COMMAND)]
    for group, options in grouped_options():
        parts.append(f"\n## {group}\n\n{GROUPS[group]}\n\n")
        parts.append("| parameter | type | default | meaning |\n|---|---|---|---|\n")
        for o in options:
            default = "**required**" if o.name == "model_path" else f"`{_literal(o.default)}`"
            meaning = f"{o.help}. {o.more}".strip() if o.more else o.help
            meaning = meaning.replace("|", "\\|")
            parts.append(f"| `{o.name}` | `{o.notebook_type}` | {default} | {meaning} |\n")
    return "".join(parts)


def parameters_cell(notebook: Mapping[str, Any]) -> dict[str, Any]:
    """The cell tagged `parameters` of a notebook loaded as JSON."""
    for cell in notebook["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no cell tagged parameters")


def write_notebook_cell(path: Path) -> bool:
    """Rewrite only the parameters cell of the notebook at `path` (the rest byte for byte);
    True when it changed."""
    text = path.read_text(encoding="utf-8")
    notebook = json.loads(text)
    source = notebook_cell_source()
    parameters_cell(notebook)["source"] = source.splitlines(keepends=True)
    new = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def write_docs_page(path: Path = DOCS_PAGE) -> bool:
    """Rewrite docs/parameters.md from the table; True when it changed."""
    page = docs_page()
    if path.is_file() and path.read_text(encoding="utf-8") == page:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m modelverify_kernel.params [--write]`: whether the notebook's parameters cell and
    docs/parameters.md say what the table says (exit 1 when not); --write rewrites them."""
    import argparse

    from .resources import notebook_path

    parser = argparse.ArgumentParser(
        prog="python -m modelverify_kernel.params", description=main.__doc__
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite the notebook's parameters cell and docs/parameters.md from the table",
    )
    write = parser.parse_args(argv).write
    notebook = notebook_path()
    current = parameters_cell(json.loads(notebook.read_text(encoding="utf-8")))["source"]
    stale = {
        notebook: "".join(current) != notebook_cell_source(),
        DOCS_PAGE: not DOCS_PAGE.is_file() or DOCS_PAGE.read_text(encoding="utf-8") != docs_page(),
    }
    if write:
        write_notebook_cell(notebook)
        write_docs_page()
    for path, differs in stale.items():
        word = ("wrote" if write else "differs from the table:") if differs else "up to date:"
        print(f"{word} {path}")
    return 1 if any(stale.values()) and not write else 0


if __name__ == "__main__":
    raise SystemExit(main())
