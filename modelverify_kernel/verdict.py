"""Step 8: the truth table of DESIGN.md → conclusion, component, recommended stack, status.

A run passes only when both its phases pass. Rows the table lacks: a run that never started
(probe or model step failed) is PRECHECK_FAILED; Run A failing while Run B was skipped is
RUN_B_SKIPPED with status FAIL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from .runs import PhaseResult

MULTICHIP = ("FlagGems", "FlagTree", "FlagCX", "plugin")


@dataclass(frozen=True)
class Verdict:
    conclusion: str
    detail: str
    multichip_component: str | None
    recommended_stack: str  # full | base | none
    status: str  # PASS | PARTIAL | FAIL
    component: str | None = None  # what the diagnosis blamed, multi-chip or not

    def to_dict(self) -> dict:
        return asdict(self)


def run_status(phases: Mapping[str, PhaseResult]) -> str:
    statuses = {p.status for p in phases.values()}
    if statuses <= {"SKIPPED"}:
        return "SKIPPED"
    if statuses == {"PASS"}:
        return "PASS"
    if statuses <= {"NOT_RUN"}:
        return "NOT_RUN"
    return "FAIL"


def failures(phases: Mapping[str, PhaseResult]) -> list[PhaseResult]:
    return [p for p in phases.values() if p.status == "FAIL"]


def _signature(p: PhaseResult) -> str:
    if p.diagnosis and p.diagnosis.get("signature"):
        return p.diagnosis["signature"]
    return f"{p.error_type}: {p.error}"


def _component(fails: list[PhaseResult]) -> str | None:
    """The first diagnosed component of a run's failures, offline before serve."""
    for p in fails:
        if p.diagnosis and p.diagnosis.get("component") not in (None, "none"):
            return p.diagnosis["component"]
    return None


def _describe(fails: list[PhaseResult]) -> str:
    return "; ".join(f"{p.phase}: {p.error}" for p in fails)


def precheck_failed(reason: str) -> Verdict:
    return Verdict("PRECHECK_FAILED", reason, None, "none", "FAIL")


def decide(run_a: Mapping[str, PhaseResult], run_b: Mapping[str, PhaseResult],
           skip_reason: str | None = None) -> Verdict:
    a, b = run_status(run_a), run_status(run_b)
    fails_a, fails_b = failures(run_a), failures(run_b)
    comp_a, comp_b = _component(fails_a), _component(fails_b)

    def multichip(c: str | None) -> str | None:
        return c if c in MULTICHIP else None

    if a == "PASS":
        if b == "SKIPPED":
            return Verdict("RUN_B_SKIPPED", skip_reason or "Run B skipped.", None, "base", "PARTIAL")
        if b == "PASS":
            return Verdict("BOTH_PASS", "Both runs passed offline and served.", None, "full", "PASS")
        return Verdict(
            "MULTICHIP_ERROR",
            f"Run A passed; Run B failed with the multi-chip stack ({_describe(fails_b)})"
            + (f"; diagnosed component: {comp_b}." if comp_b else "; no rule named the component."),
            multichip(comp_b), "base", "PARTIAL", comp_b,
        )
    if b == "SKIPPED":
        return Verdict(
            "RUN_B_SKIPPED",
            f"Run A failed ({_describe(fails_a)}); {skip_reason or 'Run B skipped.'}",
            multichip(comp_a), "none", "FAIL", comp_a,
        )
    if b == "PASS":
        return Verdict(
            "UNEXPECTED",
            f"Run A failed without the stack ({_describe(fails_a)}) but Run B passed with it: "
            "investigate before trusting either.",
            None, "full", "FAIL", comp_a,
        )
    sigs_a = {_signature(p) for p in fails_a}
    sigs_b = {_signature(p) for p in fails_b}
    if sigs_a == sigs_b:
        return Verdict(
            "SAME_ERROR",
            f"Both runs failed the same way ({_describe(fails_a)}). FlagTree and the plugin are "
            "present in both runs, so the same error does not clear the stack.",
            multichip(comp_a), "none", "FAIL", comp_a,
        )
    return Verdict(
        "DIFFERENT_ERRORS",
        f"Run A failed ({_describe(fails_a)}); Run B failed differently ({_describe(fails_b)}).",
        multichip(comp_b) or multichip(comp_a), "none", "FAIL", comp_b or comp_a,
    )
