"""Arch-specialised ops, loaded the way the real FlagGems 5.0.2 loads its Hopper ones.

The real one puts `runtime/backend/_nvidia/hopper` on `sys.path` and imports `hopper.ops`, so its
arch `mm`, `fill_*`, `sqrt` … are functions of a top-level module `hopper.ops.<op>` whose files
lie inside the flag_gems package. Here `FAKE_GEMS_ARCH=archx` imports `archx.ops` from
`runtime/backend/_cpu/` the same way; its `rsqrt` then replaces the generic one.
"""

import importlib
import os
import sys


def arch_ops() -> dict:
    """The arch-specialised kernels by function name ({} unless FAKE_GEMS_ARCH names an arch)."""
    arch = os.environ.get("FAKE_GEMS_ARCH", "").strip()
    if not arch:
        return {}
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cpu")
    sys.path.insert(0, folder)
    try:
        ops = importlib.import_module(f"{arch}.ops")
    finally:
        sys.path.remove(folder)
    return {name: getattr(ops, name) for name in getattr(ops, "__all__", ())}
