"""Where an op's code lives, and which component defines a Triton kernel of a given name.

The index ``references/triton-kernels.json`` is built by ``python -m
modelverify_kernel.kernel_index`` from the components' sources; this module only reads it.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from .knowledge import KERNEL_INDEX_FILE, default_references

# where an op's code lives: flag_gems/ops/<op>.py (vendor copies under runtime/backend/_<vendor>/),
# flag_gems/fused/<op>.py, the plugin's vllm_fl/ops/…/<op>.py
OP_PATH = re.compile(
    r"(?:flag_gems/(?:runtime/backend/_\w+/)?(?:ops|fused)"
    r"|vllm_fl/ops(?:/[\w/]*)?)/(\w+)\.py"
)
_IDENT = re.compile(r"[A-Za-z_]\w*_\w+")


def index_file() -> Path:
    """The shipped kernel index in references/."""
    return default_references() / KERNEL_INDEX_FILE


@lru_cache(maxsize=4)
def load_index(path: Path | None = None) -> dict[str, tuple[str, str | None]]:
    """name -> (component, op); empty when the file is missing or unreadable (the classifier
    then simply has no kernel names to go by)."""
    try:
        path = path or index_file()
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: (comp, op) for name, (comp, op) in data["kernels"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def kernel_named(text: str) -> tuple[str, str, str | None] | None:
    """The Triton kernel the failure's own text names, by who defines it: (kernel, component,
    op). None when no known kernel is named, or the names point at different components."""
    index = load_index()
    hits = {name: index[name] for name in _IDENT.findall(text) if name in index}
    if not hits or len({comp for comp, _ in hits.values()}) > 1:
        return None
    name, (comp, op) = next(iter(hits.items()))
    return name, comp, op
