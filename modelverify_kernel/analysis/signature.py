"""What a failure is called across runs (its normalised signature) and which op it hit."""

from __future__ import annotations

import re

from .kernels import OP_PATH, kernel_named
from .knowledge import Tables
from .logread import Frame

_FUNCTION = re.compile(r"\bin (\S+)\s*$")


def normalise(text: str, tables: Tables) -> str:
    """Text with what differs between runs of the same cause replaced (owners.md's normalisers)."""
    for pat, rep in tables.normalisers:
        text = pat.sub(rep, text)
    return text.strip()[:300]


def flagos_frame(frames: list[Frame], tables: Tables) -> str | None:
    """``pkg/path.py:function`` of the innermost frame in a FlagOS package, if any."""
    for fr in reversed(frames):
        path = fr.path.replace("\\", "/")
        for pkg in tables.signature_packages:
            i = path.rfind(f"/{pkg}/")
            if i >= 0 or path.startswith(f"{pkg}/"):
                rel = path[i + 1 :] if i >= 0 else path
                fn = _FUNCTION.search(fr.text)
                return rel + (f":{fn.group(1)}" if fn else "")
    return None


def signature(head: str, frames: list[Frame], tables: Tables) -> str:
    """``Type: message`` normalised, `` @ pkg/path.py:function`` of the innermost FlagOS frame."""
    where = flagos_frame(frames, tables)
    return normalise(head, tables) + (f" @ {normalise(where, tables)}" if where else "")


def culprit_op(frames: list[Frame], text: str, component: str) -> str | None:
    """The op whose code failed: the innermost op path among the frames, else in the text, else
    the op of a kernel the text names when the blame is that kernel's owner's."""
    for fr in reversed(frames):
        m = OP_PATH.search(fr.path.replace("\\", "/"))
        if m:
            return m.group(1)
    m = OP_PATH.search(text)
    if m:
        return m.group(1)
    named = kernel_named(text)
    return named[2] if named and named[1] == component else None
