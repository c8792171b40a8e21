"""Which component defines a Triton kernel, by the kernel's name.

A device fault often names nothing but the kernel that faulted (MetaX: ``trapping: kernelName:
mm_kernel``; a Triton launch line ``argmax_kernel[grid](``; ``def pow_kernel(`` in a compile
error). The owner of that kernel is whoever defines it, so the classifier looks the name up in an
index built from the components' own sources: every function decorated as a Triton kernel
(``@triton.jit``, ``@libentry()``, ``@triton.autotune``…) in FlagGems, vLLM and the FL plugin.
A name defined by two components says nothing and is left out, and so are names of one word
(``copy``, ``launch``, ``relu_``, ``__call__``): prose uses them too; kernels have compound names.

The classifier reads the index (and the OP_PATH rule of where an op's code lives) through
``analysis/kernels.py``; this module builds it. The index shipped in
``references/triton-kernels.json`` is rebuilt with::

    python -m modelverify_kernel.kernel_index FlagGems=SRC [vllm=SRC] [plugin=SRC] ... [--out FILE]

where each SRC is a source tree (a checkout, or an installed package folder) of that component;
one component may be given several trees (versions), their kernels are merged.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

from .analysis.kernels import OP_PATH, index_file
from .analysis.kernels import load_index as load  # noqa: F401 - the index reader, re-exported
from .analysis.knowledge import KERNEL_INDEX_FILE

INDEX_NAME = KERNEL_INDEX_FILE  # in references/ (resources.references_dir)
COMPONENTS = ("FlagGems", "vllm", "plugin", "FlagTree")
# decorators that make a function a Triton kernel (or FlagGems' wrappers of one)
_KERNEL_DECORATORS = frozenset(
    {"jit", "libentry", "autotune", "heuristics", "libtuner", "pointwise_dynamic"}
)
_SPECIFIC = re.compile(r"_*[A-Za-z0-9]+_[A-Za-z0-9_]*[A-Za-z0-9]_*")


def _decorator_name(node: ast.expr) -> str | None:
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def kernels_in(tree: Path) -> dict[str, str | None]:
    """Every Triton kernel defined under ``tree``: name -> the op it implements (from the
    ``…/ops/<op>.py`` path) or None."""
    found: dict[str, str | None] = {}
    for path in sorted(tree.rglob("*.py")):
        try:
            module = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        rel = path.as_posix()
        m = OP_PATH.search(rel)
        op = m.group(1) if m else None
        for node in ast.walk(module):
            if (
                isinstance(node, ast.FunctionDef)
                and _SPECIFIC.fullmatch(node.name)
                and not node.name.startswith("__")
                and any(_decorator_name(d) in _KERNEL_DECORATORS for d in node.decorator_list)
            ):
                if found.get(node.name) is None:  # the generic ops/ copy names the op
                    found[node.name] = op
    return found


def build(sources: list[tuple[str, Path]], about: str = "") -> dict:
    """The index of the given (component, source tree) pairs; names two components define are
    dropped (listed under "ambiguous")."""
    per_comp: dict[str, dict[str, str | None]] = {}
    for comp, tree in sources:
        for name, op in kernels_in(tree).items():
            ops = per_comp.setdefault(comp, {})
            if ops.get(name) is None:
                ops[name] = op
    owners: dict[str, set[str]] = {}
    for comp, names in per_comp.items():
        for name in names:
            owners.setdefault(name, set()).add(comp)
    kernels = {
        name: [next(iter(comps)), per_comp[next(iter(comps))][name]]
        for name, comps in sorted(owners.items())
        if len(comps) == 1
    }
    return {
        "about": about
        or "Triton kernels by the component that defines them "
        "(modelverify_kernel/kernel_index.py).",
        "counts": {comp: sum(1 for c, _ in kernels.values() if c == comp) for comp in per_comp},
        "ambiguous": sorted(n for n, comps in owners.items() if len(comps) > 1),
        "kernels": kernels,
    }


def _dumps(index: dict) -> str:
    """JSON with one kernel per line (the file is reviewed as a diff when rebuilt)."""
    head = {k: v for k, v in index.items() if k != "kernels"}
    body = ",\n".join(
        f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in index["kernels"].items()
    )
    return json.dumps(head, indent=1)[:-2] + ',\n "kernels": {\n' + body + "\n }\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernel_index", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="COMPONENT=SRC",
        help=f"a component ({', '.join(COMPONENTS)}) and a source tree of it",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"where to write the index (default: references/{INDEX_NAME})",
    )
    parser.add_argument(
        "--about", default="", help="where the sources came from (kept in the file)"
    )
    args = parser.parse_args(argv)
    sources = []
    for spec in args.sources:
        comp, sep, src = spec.partition("=")
        if not sep or comp not in COMPONENTS or not Path(src).is_dir():
            print(
                f"kernel_index: {spec!r} must be COMPONENT=DIR with COMPONENT one of "
                f"{', '.join(COMPONENTS)} and DIR an existing source tree",
                file=sys.stderr,
            )
            return 2
        sources.append((comp, Path(src)))
    index = build(sources, args.about)
    out = args.out or index_file()
    out.write_text(_dumps(index), encoding="utf-8")
    print(
        f"{out}: {len(index['kernels'])} kernels {index['counts']}, "
        f"{len(index['ambiguous'])} ambiguous names left out"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
