"""A phase that hit its timeout: still working (never blamed) or hung — the TIMEOUT-* rules.

The rules' words (rule id, component, confidence, signature, hint) are the table in
`references/timeouts.md`; this module decides which row applies from the attempt's raw exit
facts (`records.PhaseExit`) and fills in the row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import PhaseExit
from .knowledge import RuleError, default_references, plain_cell, read_table

TABLE_FILE = "timeouts.md"
_HEADER = ("case", "rule", "component", "confidence", "signature", "hint")


@dataclass(frozen=True)
class TimeoutRule:
    """One row of references/timeouts.md."""

    case: str  # health_cap | cap | progress | hang
    rule: str
    component: str
    confidence: str
    signature: str
    hint: str


@functools.lru_cache(maxsize=4)
def _parse(path_str: str) -> dict[str, TimeoutRule]:
    """The rows, read by the one table reader of references/ (analysis/knowledge.py)."""
    path = Path(path_str)
    rows = {
        cells[0]: TimeoutRule(*(plain_cell(c) for c in cells))
        for cells, _ in read_table(path, _HEADER, what="timeout table")
    }
    missing = {"health_cap", "cap", "progress", "hang"} - set(rows)
    if missing:
        raise RuleError(f"{path.name}: the timeout table lacks {', '.join(sorted(missing))}")
    return rows


def load_rules(references_dir: Path | None = None) -> dict[str, TimeoutRule]:
    """The TIMEOUT-* rows by case, parsed from references/timeouts.md."""
    folder = Path(references_dir) if references_dir is not None else default_references()
    return _parse(str((folder / TABLE_FILE).resolve()))


def _diagnosis(row: TimeoutRule, error: str, evidence: list[str], **words: str) -> dict[str, Any]:
    return {
        "component": row.component,
        "layer": None,
        "rule": row.rule,
        "evidence": evidence,
        "culprit_op": None,
        "confidence": row.confidence,
        "signature": row.signature.format(**words),
        "hint": row.hint.format(**words),
        "error": error,
    }


def health_cap(error: str) -> dict[str, Any]:
    """The serve script's /health wait hit timeout_cap while the server was still starting."""
    return _diagnosis(load_rules()["health_cap"], error, [error])


def still_progressing(ex: PhaseExit, duration_s: float) -> tuple[str, dict[str, Any]] | None:
    """(error, diagnosis) when the phase was stopped while still working, else None (it hung)."""
    idle_ok = ex.idle_s is not None and ex.progress_window is not None
    progressing = ex.ended_by == "cap" or (
        ex.ended_by in (None, "timeout") and idle_ok and ex.idle_s <= ex.progress_window
    )
    if not progressing:
        return None
    at_cap = ex.ended_by == "cap"
    limit = (
        f"the hard cap timeout_cap={ex.cap:g} s"
        if at_cap
        else f"{ex.timeout_param}={ex.timeout:g} s"
    )
    raise_what = "timeout_cap" if at_cap else ex.timeout_param
    last = (ex.last_line or "").strip()
    ran = ex.ran_s if ex.ran_s is not None else duration_s
    idle = (
        f"output {ex.idle_s:.0f} s before it" if ex.idle_s is not None else "output until the end"
    )
    error = (
        f"timed out after {ran:.0f} s ({limit}) while still making progress: {idle}, "
        f"last line: {last[:300]!r}"
    )
    row = load_rules()["cap" if at_cap else "progress"]
    return error, _diagnosis(
        row, error, [last] if last else [], limit=limit, **{"raise": raise_what}
    )


def hang_error(ex: PhaseExit, duration_s: float) -> str:
    """What a hung phase's record says happened."""
    ran = ex.ran_s if ex.ran_s is not None else duration_s
    param, timeout = ex.timeout_param, ex.timeout
    silent = (
        f"no output for the last {ex.idle_s:.0f} s" if ex.idle_s is not None else "no output at all"
    )
    if ex.ended_by == "silence":
        error = (
            f"ran past {param}={timeout:g} s while output kept coming, then hung: {silent} "
            f"(stopped after {ran:.0f} s); every process of the phase was killed"
        )
    else:
        error = (
            f"timed out after {timeout:g} s ({param}) with {silent}: hung; every process of the "
            "phase was killed"
        )
    if ex.dumped:
        error += f" after printing the stacks of {ex.dumped} process(es) into the log"
    return error


def hang_diagnosis(ex: PhaseExit, error: str, diag: dict[str, Any]) -> dict[str, Any] | None:
    """The TIMEOUT-HANG diagnosis when the stacks' classification named no component, else None."""
    if diag.get("component") not in (None, "none", "unknown"):
        return None
    last = (ex.last_line or "").strip()
    row = load_rules()["hang"]
    out = dict(diag)  # the classifier's keys keep their order; its culprit_op stays
    out.update(
        component=row.component,
        layer=None,
        rule=row.rule,
        confidence=row.confidence,
        evidence=(diag.get("evidence") or ([last] if last else []))[:6],
        signature=row.signature.format(param=ex.timeout_param),
        hint=row.hint,
        error=error,
    )
    return out
