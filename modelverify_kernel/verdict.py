"""Step 8: the truth table of DESIGN.md → conclusion, component, recommended stack, status.

A run passes only when both its phases pass. Rows the table lacks: a run that never started
(probe or model step failed) is PRECHECK_FAILED; Run A failing while Run B was skipped is
RUN_B_SKIPPED with status FAIL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from .compare import PhaseComparison
from .runs import PhaseResult
from .stack import ComponentActivity

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
    """Each failed phase's recorded error, with the diagnosed root cause beside it when it differs."""
    parts = []
    for p in fails:
        root = (p.diagnosis or {}).get("error")
        extra = f" (root cause: {root})" if root and root not in (p.error or "") else ""
        parts.append(f"{p.phase}: {p.error}{extra}")
    return "; ".join(parts)


def precheck_failed(reason: str) -> Verdict:
    return Verdict("PRECHECK_FAILED", reason, None, "none", "FAIL")


def _both_pass(comparisons: list[PhaseComparison] | None,
               activity_b: Mapping[str, ComponentActivity] | None) -> Verdict:
    """Both runs passed: only agreeing outputs from an active stack make BOTH_PASS.

    Divergence is the harder evidence, so it wins over an inactive stack.
    """
    for c in comparisons or []:
        if c.diverged:
            d = c.diverged[0]
            return Verdict(
                "OUTPUT_MISMATCH",
                f"Run B's {c.phase} output diverges from Run A's at prompt {d.index} "
                f"({d.prompt[:60]!r}), token position {d.first_divergence}: {d.judgement} — {d.detail}.",
                None, "base", "PARTIAL", "numerical",
            )
        if c.new_garbage:
            g = c.new_garbage[0]
            return Verdict(
                "OUTPUT_MISMATCH",
                f"Run B's {c.phase} output is garbage where Run A's is not: {g.check} at prompt "
                f"{g.index} ({g.detail}).",
                None, "base", "PARTIAL", "numerical",
            )
    active = [a.component for a in (activity_b or {}).values() if a.status == "active"]
    if not active:
        return Verdict(
            "STACK_INACTIVE",
            "Run B passed, but nothing shows that the multi-chip stack was active in it (no "
            "FlagGems ops enabled, no FL plugin loaded, no FlagTree or FlagCX in use): it ran "
            "the base stack, so it proves nothing about the multi-chip one.",
            None, "base", "PARTIAL",
        )
    compared = sum(len(c.prompts) for c in comparisons or [])
    return Verdict(
        "BOTH_PASS",
        f"Both runs passed offline and served; active in Run B: {', '.join(active)}; "
        f"{compared} outputs compared within tolerance.",
        None, "full", "PASS",
    )


def decide(run_a: Mapping[str, PhaseResult], run_b: Mapping[str, PhaseResult],
           skip_reason: str | None = None, comparisons: list[PhaseComparison] | None = None,
           activity_b: Mapping[str, ComponentActivity] | None = None) -> Verdict:
    missing = [f"{p.run} {p.phase}" for p in (*run_a.values(), *run_b.values()) if p.status == "NOT_RUN"]
    if missing:
        return Verdict(
            "INCOMPLETE",
            f"The verification stopped before it finished ({', '.join(missing)} not run); the "
            "report was rebuilt from what was on disk. Rerun it for a verdict.",
            None, "none", "FAIL",
        )
    a, b = run_status(run_a), run_status(run_b)
    fails_a, fails_b = failures(run_a), failures(run_b)
    comp_a, comp_b = _component(fails_a), _component(fails_b)

    def multichip(c: str | None) -> str | None:
        return c if c in MULTICHIP else None

    if a == "PASS":
        if b == "SKIPPED":
            return Verdict("RUN_B_SKIPPED", skip_reason or "Run B skipped.", None, "base", "PARTIAL")
        if b == "PASS":
            return _both_pass(comparisons, activity_b)
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
