"""Evidence in, judgement out: every judgement the report needs, from one `records.Evidence`.

An attempt is judged from its raw facts (exit, timeout facts, result file, log): status, error,
diagnosis. The runs are then compared, each run's stack activity assessed and put through the
gate, and the truth table gives the verdict. Nothing here runs a process or writes a file, so
`report DIR` re-judges a finished (or killed) run with today's rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..records import Evidence, Gate, PhaseComparison, PhaseResult, Verdict
from ..vocabulary import PHASES
from . import compare, gate, timeouts, verdict
from .diagnose import classify_log
from .gate import ComponentActivity

# The fields of a PhaseResult that are judgement, recomputed from the raw facts.
JUDGED_FIELDS = ("status", "error", "error_type", "diagnosis", "timeout_note")


@dataclass(frozen=True)
class Judgement:
    """What the analysis concluded from one Evidence (the report shows it beside the evidence)."""

    verdict: Verdict
    comparisons: list[PhaseComparison] = field(default_factory=list)
    activity: dict[str, dict[str, ComponentActivity]] = field(default_factory=dict)
    engine_env: dict[str, dict[str, Any]] = field(default_factory=dict)
    gate: Gate | None = None  # None: not judged (the pre-check failed)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- one attempt


def diagnose(pr: PhaseResult, installed: Mapping[str, Any] | None = None) -> PhaseResult:
    """The phase with the log's diagnosis *beside* its own recorded error, never over it.

    The error the phase recorded (the script's exception, a timeout, a broken result file) is
    what happened; the diagnosis (component, rule, evidence, and its own `error`: the root cause
    it settled on) sits next to it. Only a phase that recorded no error at all borrows the
    diagnosis' one. `installed`: what the probe found installed in the target (probe_stack.py's
    `owners`): a frame's file is owned by the distribution that installed it.
    """
    log = Path(pr.log) if pr.log and Path(pr.log).is_file() else []
    recorded = (
        pr.result
        if pr.result.get("error")
        else {**pr.result, "status": "FAIL", "error": pr.error, "error_type": pr.error_type}
    )
    diag = classify_log(log, recorded, installed=installed or None)
    pr = replace(pr, diagnosis=diag.to_dict())
    if not pr.error and diag.error:
        pr = replace(
            pr, error=diag.error, error_type=diag.error.split(":", 1)[0].rsplit(".", 1)[-1]
        )
    return pr


def _timed_out(pr: PhaseResult, installed: Mapping[str, Any] | None) -> PhaseResult:
    """A hang and a slow start both hit the timeout; only a hang is a failure of a component.

    Stopped at the cap or while output was still coming it is never blamed on a component
    (references/timeouts.md); stopped by silence, the stacks every process printed before the
    kill say where it waited.
    """
    assert pr.exit is not None
    ex = pr.exit
    pr = replace(pr, status="FAIL", error_type="Timeout")
    progressing = timeouts.still_progressing(ex, pr.duration_s or 0.0)
    if progressing:
        error, diagnosis = progressing
        return replace(pr, error=error, diagnosis=diagnosis)
    error = timeouts.hang_error(ex, pr.duration_s or 0.0)
    pr = diagnose(replace(pr, error=error), installed)
    diag = dict(pr.diagnosis or {})
    hang = timeouts.hang_diagnosis(ex, error, diag)
    if hang is not None:
        return replace(pr, diagnosis=hang)
    if diag.get("error") and not diag["error"].startswith(("stack dump", "traceback cut")):
        return replace(pr, error=f"{error}; before it: {diag['error']}")  # failed first, then hung
    return pr


def judge_attempt(pr: PhaseResult, installed: Mapping[str, Any] | None = None) -> PhaseResult:
    """One attempt's status, error and diagnosis from its raw facts (`pr.exit`, result, log).

    A record without raw facts (skipped, not run, or written before they were kept) is returned
    as it is.
    """
    ex = pr.exit
    if ex is None:
        return pr
    if ex.ended_by == "stopped":  # the controller stopped it (Ctrl-C): it never finished
        return replace(
            pr,
            status="NOT_RUN",
            error=None,
            error_type=None,
            diagnosis=None,
            timeout_note=None,
            reason="NOT_RUN: interrupted (Ctrl-C); the phase's processes were stopped",
        )
    pr = replace(pr, status="FAIL", error=None, error_type=None, diagnosis=None, timeout_note=None)
    duration = pr.duration_s or 0.0
    if not pr.timed_out and duration > ex.timeout:
        pr = replace(
            pr,
            timeout_note=(
                f"took {duration:.0f} s, past {ex.timeout_param}={ex.timeout:g} s: output was still "
                f"coming at the timeout (loading, compiling kernels), so it ran on — up to "
                f"timeout_cap={ex.cap:g} s — and finished by itself"
            ),
        )
    if pr.timed_out:
        return _timed_out(pr, installed)
    if pr.result.get("status") == "PASS" and pr.exit_code == 0 and not ex.result_error:
        return replace(pr, status="PASS")
    if ex.result_error:  # what happened is the broken result file, whatever the log last said
        return diagnose(replace(pr, error=ex.result_error, error_type="ResultFileError"), installed)
    pr = replace(
        pr,
        error=pr.result.get("error") or f"exit code {pr.exit_code}",
        error_type=pr.result.get("error_type"),
    )
    if pr.error_type == "StartupStillProgressing":  # the serve script's health wait hit the cap
        return replace(pr, diagnosis=timeouts.health_cap(pr.error or ""))
    return diagnose(pr, installed)


def rejudge(evidence: Evidence) -> Evidence:
    """The same evidence with every attempt judged again by today's rules (`report DIR`)."""
    installed = (evidence.probe or {}).get("owners")  # what the probe found installed
    judged = {(p.run, p.phase, p.attempt): judge_attempt(p, installed) for p in evidence.attempts}

    def latest(p: PhaseResult) -> PhaseResult:
        return judged.get((p.run, p.phase, p.attempt), p) if p.exit is not None else p

    runs = {
        run: {ph: latest(p) for ph, p in phases.items()} for run, phases in evidence.runs.items()
    }
    return replace(evidence, attempts=tuple(judged.values()), runs=runs)


# --------------------------------------------------------------------------- both runs


def tolerances(parameters: Mapping[str, Any]) -> compare.Tolerances:
    """The comparison's thresholds from the parameters (the rest from references/)."""
    shift = parameters.get("systematic_shift")
    return compare.Tolerances(
        tie=parameters["tie_tolerance"],
        logprob=parameters["logprob_tolerance"],
        repeat_fraction=parameters["repeat_fraction"],
        **({} if shift is None else {"systematic_shift": shift}),
    )


def comparisons(evidence: Evidence) -> list[PhaseComparison]:
    """Run A vs Run B outputs of the phases both passed (latest attempts)."""
    tol = tolerances(evidence.parameters)
    outputs = {
        run: {
            ph: pr.result.get("outputs") or [] for ph, pr in phases.items() if pr.status == "PASS"
        }
        for run, phases in evidence.runs.items()
    }
    a, b = outputs.get("run_a", {}), outputs.get("run_b", {})
    shared = [ph for ph in PHASES if ph in a and ph in b]
    return [compare.compare_phase(ph, a[ph], b[ph], tol) for ph in shared]


def activity(
    evidence: Evidence,
) -> tuple[dict[str, dict[str, ComponentActivity]], dict[str, dict[str, Any]]]:
    """Each run's stack activity (merged over the phases that ran) and its engines' variables."""
    flagcx = (evidence.probe or {}).get("flagcx") or {}
    found, engine_env = {}, {}
    for name, phases in evidence.runs.items():
        spec = evidence.spec(name)
        library = flagcx.get("library") if spec.flagcx_path == flagcx.get("path") else None
        ran = [pr for pr in phases.values() if pr.status in ("PASS", "FAIL")]
        events = [pr.result.get("stack_evidence") or [] for pr in ran]
        found[name] = (
            gate.merge(
                {
                    pr.phase: gate.assess(
                        ev, gate.claims_in_log(pr.log), evidence.tp, spec.flagcx_path, library
                    )
                    for pr, ev in zip(ran, events)
                }
            )
            if ran
            else {}
        )
        engine_env[name] = gate.engine_environment(e for ev in events for e in ev)
    return found, engine_env


def in_both_runs(evidence: Evidence, run_a: Mapping[str, ComponentActivity]) -> list[str]:
    """FlagOS parts the probe found that Run A does not leave out."""
    present = (evidence.probe or {}).get("multichip_present") or {}
    both = ["FlagTree"] if present.get("FlagTree") else []
    plugin_a = run_a.get("plugin")
    native = (evidence.spec("run_a").base_mode or {}).get("mode") == "native"
    if (plugin_a is not None and plugin_a.loaded) or (present.get("plugin") and native):
        both.append("the FL plugin")
    return both


def warnings(evidence: Evidence) -> list[str]:
    """What the engineer should know although no rule of the verdict turned on it."""
    flagcx = (evidence.probe or {}).get("flagcx") or {}
    path = evidence.spec("run_b").flagcx_path
    if not (
        path
        and flagcx.get("path") == path
        and not flagcx.get("library")
        and evidence.run_b_skip is None
    ):
        return []
    relevance = (
        "it matters only at TP>1: at TP=1 FlagCX is never exercised"
        if (evidence.tp or 1) <= 1
        else "so FlagCX is counted inactive in Run B"
    )
    expected = flagcx.get("expected_library") or "build/lib/libflagcx.so"
    return [
        f"Run B's FLAGCX_PATH={path} does not hold {expected}: "
        f"the FL plugin's FlagCX communicator turns itself off silently ({relevance}). Point "
        'FLAGCX_PATH at a FlagCX build with -y \'run_b_env: {"FLAGCX_PATH": "…"}\'.'
    ]


def judge(evidence: Evidence) -> Judgement:
    """The verdict and everything it rests on, from the latest attempt of each phase."""
    notes = warnings(evidence) if evidence.specs else []
    compared = comparisons(evidence)
    found, engine_env = activity(evidence)
    g = gate.gate(found.get("run_a"), found.get("run_b"))
    if evidence.precheck_error:  # the runs never started: what they show is judged all the same
        decided = verdict.precheck_failed(evidence.precheck_error)
        return Judgement(decided, compared, found, engine_env, g, notes)
    decided = verdict.decide(
        evidence.runs["run_a"],
        evidence.runs["run_b"],
        evidence.run_b_skip,
        compared,
        g,
        in_both_runs(evidence, found.get("run_a", {})),
        evidence.spec("run_a").base_mode,
    )
    if evidence.ablation is not None:
        decided = verdict.with_component(decided, evidence.ablation)
    if evidence.bisection is not None:
        decided = verdict.with_culprits(decided, evidence.bisection)
    return Judgement(decided, compared, found, engine_env, g, notes)
