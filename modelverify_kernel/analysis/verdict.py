"""Step 8: the truth table of DESIGN.md → conclusion, component, recommended stack, status.

A run passes only when both its phases pass. Rows the table lacks: a run that never started
(probe or model step failed) is PRECHECK_FAILED; Run A failing while Run B was skipped is
RUN_B_SKIPPED with status FAIL; Run A whose own evidence shows FlagGems (or FlagCX at TP>1)
active is RUN_A_NOT_BASE: the comparison is invalid, whatever either run did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..records import (
    Ablation,
    Bisection,
    Gate,
    PhaseComparison,
    PhaseResult,
    Verdict,
    headline,
    run_status,
)
from ..vocabulary import MULTICHIP, conclusion

NO_GATE = Gate(False, "none", [], [])  # nothing recorded in either run


def verdict(
    name: str,
    detail: str,
    multichip_component: str | None = None,
    component: str | None = None,
    run_a_failed: bool = False,
) -> Verdict:
    """A verdict whose recommended stack and status come from the truth table's row (vocabulary)."""
    row = conclusion(name, run_a_failed)
    source = "log" if multichip_component else None  # the diagnosis: a hypothesis until proven
    return Verdict(
        row.name, detail, multichip_component, row.recommended_stack, row.status, component, source
    )


def with_component(v: Verdict, a: Ablation) -> Verdict:
    """A confirmed ablation names the component by experiment; the log's stays beside it in the
    ablation (its hypothesis). Conclusion, stack and status stay."""
    if a.status != "confirmed" or not a.component:
        return v
    differs = f" {a.disagrees}" if a.disagrees else ""
    return replace(
        v,
        multichip_component=a.component,
        component=a.component,
        component_source="experiment",
        detail=f"{v.detail} Ablation: with {a.component} switched off alone Run B's {a.phase} "
        f"phase passes and agrees with Run A — {a.component} confirmed by experiment.{differs}",
    )


def with_culprits(v: Verdict, b: Bisection) -> Verdict:
    """A confirmed culprit-op search names FlagGems and the ops; conclusion, stack and status stay."""
    if b.status != "found":
        return v
    many = len(b.culprit_ops) > 1
    return replace(
        v,
        multichip_component="FlagGems",
        component="FlagGems",
        component_source="experiment",
        detail=f"{v.detail} Culprit op search: the FlagGems kernel{'s' if many else ''} "
        f"{', '.join(b.culprit_ops)} {'break' if many else 'breaks'} Run B. {b.advice}",
    )


def failures(phases: Mapping[str, PhaseResult]) -> list[PhaseResult]:
    return [p for p in phases.values() if p.status == "FAIL"]


def failure_signature(p: PhaseResult) -> str:
    """A failure's normalised signature (the classifier's), else its exception: two failures with
    the same one are the same error (SAME_ERROR; an experiment's step that reproduces the fault)."""
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
        root = headline((p.diagnosis or {}).get("error"))
        extra = f" (root cause: {root})" if root and root not in (p.error or "") else ""
        parts.append(f"{p.phase}: {headline(p.error)}{extra}")
    return "; ".join(parts)


def precheck_failed(reason: str) -> Verdict:
    return verdict("PRECHECK_FAILED", reason)


def _both_pass(comparisons: list[PhaseComparison] | None, g: Gate) -> Verdict:
    """Both runs passed: only agreeing outputs and FlagOS work in Run B that Run A did not do make BOTH_PASS.

    Divergence is the harder evidence, so it wins over an inactive stack.
    """
    for c in comparisons or []:
        if c.mismatch_reason:
            return verdict("OUTPUT_MISMATCH", c.mismatch_reason, None, "numerical")
    if g.evidence and g.run_a_unproven:
        return verdict(
            "RUN_A_NOT_BASE",
            f"The A/B comparison cannot be shown valid: {g.run_a_unproven}. "
            "Fix: run Run A with the same Python and PYTHONPATH handling as Run B.",
        )
    if not g.passed:
        return verdict(
            "STACK_INACTIVE",
            "Run B passed, but nothing recorded inside its engine processes shows FlagOS work that Run A did "
            "not do (no FlagGems kernel ran or op was taken over, no op of the plugin's own ran, no FlagCX "
            "collective at TP>1; a plugin that only loaded, FlagTree being installed, and printed log lines "
            "do not count): it ran the base stack, so it proves nothing about the multi-chip one.",
        )
    compared = sum(len(c.prompts) for c in comparisons or [])
    weak = (
        " (weaker evidence: ops were taken over, but no kernel was seen running)"
        if g.strength == "weak"
        else ""
    )
    return verdict(
        "BOTH_PASS",
        f"Both runs passed offline and served; FlagOS work in Run B that Run A did not do{weak}: "
        f"{' | '.join(g.evidence)}; {compared} outputs compared within tolerance.",
    )


def _not_base(g: Gate, base_mode: Mapping[str, Any] | None) -> Verdict:
    mode = (base_mode or {}).get("mode")
    if mode == "native":
        fix = (
            "the FL plugin is this chip's only platform and still enabled FlagGems with USE_FLAGGEMS=0: "
            "check VLLM_FL_PREFER_ENABLED/VLLM_FL_PREFER and the plugin version (the 2025-12 plugin ignores "
            "USE_FLAGGEMS), or set Run A's switches with -y 'run_a_env: {...}'"
        )
    elif mode == "user":
        fix = (
            "Run A's VLLM_PLUGINS came from run_a_env/run_a_unset and let the plugin in: drop it there so "
            "Run A excludes the plugin (the probe's choice), or name only the plugins Run A needs; some plugin "
            "versions enable FlagGems whenever loaded and ignore USE_FLAGGEMS"
        )
    else:
        fix = (
            'keep FlagOS out of Run A: exclude the plugin with -y \'run_a_env: {"VLLM_PLUGINS": ""}\' '
            "(or list the plugins Run A needs; some plugin versions enable FlagGems whenever loaded and "
            "ignore USE_FLAGGEMS), or find what else enables FlagGems in Run A"
        )
    return verdict(
        "RUN_A_NOT_BASE",
        f"Run A was not the base stack, so the A/B comparison is invalid: {' | '.join(g.run_a_not_base)}. "
        f"Fix: {fix}.",
    )


def decide(
    run_a: Mapping[str, PhaseResult],
    run_b: Mapping[str, PhaseResult],
    skip_reason: str | None = None,
    comparisons: list[PhaseComparison] | None = None,
    gate: Gate | None = None,
    in_both: Sequence[str] = (),
    base_mode: Mapping[str, Any] | None = None,
) -> Verdict:
    """`gate`: stack.gate() of the two runs' activity (None: nothing recorded); `in_both`: the
    FlagOS components the probe found that Run A cannot leave out (FlagTree, a plugin that is the
    chip's platform)."""
    missing = [
        f"{p.run} {p.phase}" for p in (*run_a.values(), *run_b.values()) if p.status == "NOT_RUN"
    ]
    if missing:
        return verdict(
            "INCOMPLETE",
            f"The verification stopped before it finished ({', '.join(missing)} not run); the "
            "report was rebuilt from what was on disk. Rerun it for a verdict.",
        )
    g = gate or NO_GATE
    if g.run_a_not_base:
        return _not_base(g, base_mode)
    fails_a, fails_b = failures(run_a), failures(run_b)
    if run_status(run_a) == "PASS":
        return _run_a_passed(run_status(run_b), fails_b, skip_reason, comparisons, g)
    return _run_a_failed(run_status(run_b), fails_a, fails_b, skip_reason, in_both)


def _multichip(c: str | None) -> str | None:
    return c if c in MULTICHIP else None


def _run_a_passed(
    b: str,
    fails_b: list[PhaseResult],
    skip_reason: str | None,
    comparisons: list[PhaseComparison] | None,
    g: Gate,
) -> Verdict:
    """Run A passed: Run B skipped, passed (outputs and gate decide) or failed."""
    if b == "SKIPPED":
        return verdict("RUN_B_SKIPPED", skip_reason or "Run B skipped.")
    if b == "PASS":
        return _both_pass(comparisons, g)
    comp_b = _component(fails_b)
    named = comp_b if comp_b not in (None, "unknown") else None
    return verdict(
        "MULTICHIP_ERROR",
        f"Run A passed; Run B failed with the multi-chip stack ({_describe(fails_b)})"
        + (f"; diagnosed component: {named}." if named else _suspects(fails_b)),
        _multichip(comp_b),
        comp_b,
    )


def _suspects(fails: list[PhaseResult]) -> str:
    """No rule named the component: the diagnosis' ranked suspects, each with why (never one
    chosen by default; the component experiment decides)."""
    for p in fails:
        suspects = (p.diagnosis or {}).get("suspects") or []
        if suspects:
            listed = "; ".join(
                f"{s.get('component')} ({s.get('why') or s.get('evidence')})" for s in suspects[:3]
            )
            return f"; no rule named the component — suspects, most likely first: {listed}."
    return "; no rule named the component."


def _run_a_failed(
    b: str,
    fails_a: list[PhaseResult],
    fails_b: list[PhaseResult],
    skip_reason: str | None,
    in_both: Sequence[str],
) -> Verdict:
    """Run A failed: no stack is shown to serve the model; how Run B did says what to look at."""
    comp_a, comp_b = _component(fails_a), _component(fails_b)
    if b == "SKIPPED":
        return verdict(
            "RUN_B_SKIPPED",
            f"Run A failed ({_describe(fails_a)}); {skip_reason or 'Run B skipped.'}",
            _multichip(comp_a),
            comp_a,
            run_a_failed=True,
        )
    if b == "PASS":
        return verdict(
            "UNEXPECTED",
            f"Run A failed without the stack ({_describe(fails_a)}) but Run B passed with it: "
            "investigate before trusting either.",
            None,
            comp_a,
        )
    if {failure_signature(p) for p in fails_a} == {failure_signature(p) for p in fails_b}:
        one = len(in_both) == 1
        return verdict(
            "SAME_ERROR",
            f"Both runs failed the same way ({_describe(fails_a)})."
            + (
                f" {' and '.join(in_both)} {'is' if one else 'are'} in both runs, so the same "
                f"error does not clear {'it' if one else 'them'}."
                if in_both
                else ""
            ),
            _multichip(comp_a),
            comp_a,
        )
    return verdict(
        "DIFFERENT_ERRORS",
        f"Run A failed ({_describe(fails_a)}); Run B failed differently ({_describe(fails_b)}).",
        _multichip(comp_b) or _multichip(comp_a),
        comp_b or comp_a,
    )
