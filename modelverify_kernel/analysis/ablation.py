"""The component ablation's planning and conclusion, with no process in sight.

The log's diagnosis names a component: a hypothesis. The ablation proves it: Run B's first
faulty phase is run again with one FlagOS component switched off at a time, and the component
whose removal alone makes the fault go (`experiments.judge_step` → GONE) is the one. What can be
switched off is read from the evidence (which switch reaches the component, and why one cannot
be), the order from the diagnosis (its component first, then the components active in Run B,
then the rest). The runner (`modelverify_kernel/ablation.py`) asks these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from ..records import AblationRun, Evidence, PhaseResult, Verdict
from ..vocabulary import PLUGIN_SWITCH, RECORDER_SWITCH
from .experiments import (
    GONE,
    OTHER,
    SAME,
    SEARCHED,
    faulty_phase,
    ops_that_ran,
    plugin_ops,
    registered_ops,
)
from .gate import ComponentActivity

# The components an ablation can switch off, in the order tried when nothing suggests another.
COMPONENTS = ("FlagGems", "FlagCX", "plugin")
NO_EFFECT = "no_effect"  # the run's own evidence shows the component still at work
NOT_ALONE = "not_alone"  # the fault went, but another component went with the one switched off


@dataclass(frozen=True)
class Switch:
    """How one component is switched off on top of Run B's flags."""

    component: str
    env: Mapping[str, str]
    unset: tuple[str, ...] = ()
    how: str = ""  # in words, for the report


def why_not(asked: bool, verdict: Verdict | None, run_b: Mapping[str, PhaseResult]) -> str | None:
    """Why no ablation is made, or None when one should be."""
    if not asked:
        return "ablate=False was asked."
    if verdict is None or verdict.conclusion not in SEARCHED:
        name = verdict.conclusion if verdict else "no verdict yet"
        return (
            f"the verdict is {name}: a component is proven by experiment only when Run A passed "
            "and Run B failed (MULTICHIP_ERROR) or diverged (OUTPUT_MISMATCH)."
        )
    if not run_b:
        return "Run B did not run."
    return None


def flaggems_kernels(run_b: Mapping[str, PhaseResult]) -> list[str]:
    """Every FlagGems kernel Run B's evidence shows registered or running, by the names
    `enable(unused=…)` matches: what switching FlagGems off must name."""
    names: set[str] = set()
    for pr in run_b.values():
        names.update(ops_that_ran(pr), registered_ops(pr))
    return sorted(names)


def honours_use_flaggems(run_a: Mapping[str, ComponentActivity]) -> bool:
    """Run A (USE_FLAGGEMS=0) loaded the plugin and FlagGems stayed inactive: the plugin honours
    USE_FLAGGEMS there, so it switches FlagGems off, the plugin's own direct calls included."""
    plugin, gems = run_a.get("plugin"), run_a.get("FlagGems")
    return bool(plugin and plugin.loaded and gems and gems.status != "active")


def switches(
    evidence: Evidence, activity: Mapping[str, Mapping[str, ComponentActivity]]
) -> tuple[dict[str, Switch], dict[str, str]]:
    """The components that can be switched off (and how), and why each other one cannot."""
    can: dict[str, Switch] = {}
    cannot: dict[str, str] = {}
    run_b = evidence.runs.get("run_b", {})
    kernels = flaggems_kernels(run_b)
    plugin = activity.get("run_b", {}).get("plugin")
    if kernels:
        env = {RECORDER_SWITCH: ",".join(kernels)}
        how = (
            f"{RECORDER_SWITCH} naming all {len(kernels)} FlagGems kernels Run B registered or ran"
        )
        if (
            plugin is not None and plugin.loaded
        ):  # its own lists too: the run's evidence proves them
            env[PLUGIN_SWITCH] = env[RECORDER_SWITCH]
            how += f", and the plugin's {PLUGIN_SWITCH}"
        if honours_use_flaggems(activity.get("run_a", {})):
            env["USE_FLAGGEMS"] = "0"
            how += ", and USE_FLAGGEMS=0 (Run A shows the plugin honours it)"
        can["FlagGems"] = Switch("FlagGems", env, (), how)
    else:
        cannot["FlagGems"] = "Run B's evidence shows no FlagGems kernel registered or running."
    spec_b = evidence.spec("run_b")
    if (evidence.tp or 1) <= 1:
        cannot["FlagCX"] = "TP=1: FlagCX is never exercised, so switching it off proves nothing."
    elif not spec_b.flagcx_path:
        cannot["FlagCX"] = "Run B does not set FLAGCX_PATH."
    else:
        can["FlagCX"] = Switch("FlagCX", {}, ("FLAGCX_PATH",), "FLAGCX_PATH unset")
    base = evidence.spec("run_a").base_mode or {}
    if plugin is None or not plugin.loaded:
        cannot["plugin"] = "the FL plugin did not load in Run B."
    elif base.get("mode") != "exclude_plugin":
        cannot["plugin"] = (
            "no platform but the FL plugin serves these devices, so vLLM cannot run without it "
            f"({base.get('reason') or base.get('mode') or 'Run A keeps it in'})."
        )
    else:
        value = evidence.spec("run_a").env_set.get("VLLM_PLUGINS", "")
        can["plugin"] = Switch(
            "plugin", {"VLLM_PLUGINS": value}, (), f"VLLM_PLUGINS={value or chr(34) * 2}"
        )
    return can, cannot


def hypothesis(run_b: Mapping[str, PhaseResult], phase: str | None) -> str | None:
    """The component the log's diagnosis named for Run B's faulty phase (None: it named none)."""
    pr = run_b.get(phase or "")
    component = ((pr.diagnosis or {}).get("component") if pr else None) or None
    return None if component in (None, "none", "unknown") else component


def suspects(run_b: Mapping[str, ComponentActivity]) -> list[str]:
    """The components Run B's own evidence shows at work: suspects after the diagnosis' one."""
    return [c for c in COMPONENTS if (run_b.get(c) and run_b[c].status == "active")]


def order(
    hypothesised: str | None, run_b: Mapping[str, ComponentActivity], can: Sequence[str]
) -> list[str]:
    """The diagnosis' component first, then the suspects, then the rest."""
    ranked = [*([hypothesised] if hypothesised else []), *suspects(run_b), *COMPONENTS]
    return [c for c in dict.fromkeys(ranked) if c in can]


def plan(
    evidence: Evidence,
    activity: Mapping[str, Mapping[str, ComponentActivity]],
    comparisons: Sequence,
) -> tuple[str | None, str | None, list[Switch], dict[str, str]]:
    """The faulty phase, the log's hypothesis, the switches in the order to try, and why the
    components left out cannot be switched off."""
    run_b = evidence.runs.get("run_b", {})
    phase, _ = faulty_phase(run_b, comparisons)
    guess = hypothesis(run_b, phase)
    can, cannot = switches(evidence, activity)
    return (
        phase,
        guess,
        [can[c] for c in order(guess, activity.get("run_b", {}), list(can))],
        cannot,
    )


def own_run(pr: PhaseResult, *kinds: str) -> PhaseResult:
    """The run with only the evidence its own processes wrote (of `kinds`, when given): events
    stamped before it started belong to an earlier run whose files it was handed."""
    start = datetime.fromisoformat(pr.started_at).timestamp() if pr.started_at else 0.0
    own = [
        e
        for e in pr.result.get("stack_evidence") or []
        if float(e.get("time") or start) >= start and (not kinds or e.get("event") in kinds)
    ]
    return replace(pr, result={**pr.result, "stack_evidence": own})


def still_ran(switch: Switch, pr: PhaseResult) -> list[str]:
    """FlagGems code the run's own evidence shows running with FlagGems switched off, by the names
    its switch takes (a plugin op that ran without calling FlagGems is not FlagGems running)."""
    if switch.component != "FlagGems":
        return []
    names = set(ops_that_ran(own_run(pr, "flaggems_op_ran")))
    events = own_run(pr, "flaggems_op_ran", "plugin_op_ran").result.get("stack_evidence") or []
    plugin_op_of = plugin_ops(events)
    for e in events:  # FlagGems called by the plugin's own op: switched by that op's name too
        if e.get("event") == "flaggems_op_ran" and str(e.get("caller")) in plugin_op_of:
            names.add(plugin_op_of[str(e.get("caller"))])
    return sorted(names)


def took_along(switch: Switch, pr: PhaseResult, run_b_gems_active: bool) -> list[str]:
    """Components that left with the one switched off: FlagGems active in Run B but nowhere in
    this run's own evidence (the plugin is what turns FlagGems on, so switching the plugin off
    takes FlagGems with it). A removal that is not alone proves nothing about either."""
    if switch.component == "FlagGems" or not run_b_gems_active:
        return []
    gems = own_run(pr, "flaggems_op_ran", "flaggems_enabled", "flaggems_registered")
    return [] if gems.result.get("stack_evidence") else ["FlagGems"]


def widened(switch: Switch, ran: Sequence[str]) -> Switch | None:
    """FlagGems' switch with the kernels that still ran added (they run only once the others are
    off, or the evidence named them otherwise); None when it already names them all."""
    named = (switch.env.get(RECORDER_SWITCH) or "").split(",")
    new = [o for o in ran if o not in named]
    if not new:
        return None
    value = ",".join([*named, *new])
    env = {
        k: (value if k in (RECORDER_SWITCH, PLUGIN_SWITCH) else v) for k, v in switch.env.items()
    }
    return replace(switch, env=env, how=f"{switch.how}, and {', '.join(new)} that still ran")


def reproduce(switch: Switch, parameters: Mapping[str, object]) -> str:
    """The notebook's -y flags that give Run B this component (or these kernels) off on top of
    the run's own run_b_env / run_b_unset: the good configuration, runnable as written."""
    flags = []
    if switch.env:
        env = {**dict(parameters.get("run_b_env") or {}), **switch.env}  # type: ignore[call-overload]
        flags.append(f"-y 'run_b_env: {json.dumps(env)}'")
    if switch.unset:
        given = list(parameters.get("run_b_unset") or [])  # type: ignore[call-overload]
        flags.append(
            f"-y 'run_b_unset: {json.dumps(list(dict.fromkeys([*given, *switch.unset])))}'"
        )
    return " ".join(flags)


def _gone(runs: Sequence[AblationRun]) -> list[str]:
    """The components whose removal made the fault go: alone, or with another component that a
    run of its own, switched off alone, showed is not it (the fault stayed)."""
    stayed = {r.component for r in runs if r.outcome == SAME}
    return [
        r.component
        for r in runs
        if r.outcome == GONE or (r.outcome == NOT_ALONE and set(r.took_along) <= stayed)
    ]


def conclude(
    runs: Sequence[AblationRun],
    guess: str | None,
    switches_by: Mapping[str, Switch],
    parameters: Mapping[str, object],
) -> tuple[str, str, str | None, str | None, str | None]:
    """status, reason, component, where the log disagrees, -y flags — from the runs made.

    One component whose removal alone gave GONE is confirmed; OTHER and no-effect runs are
    inconclusive (said, never counted); two or more GONE prove nothing about either. A removal
    that took another component along (the plugin takes FlagGems with it) counts only where a
    run with that other component off alone kept the fault (SAME: proven not to be it)."""
    gone = _gone(runs)
    unclear = [r for r in runs if r.outcome in (OTHER, NO_EFFECT, NOT_ALONE)]
    unclear = [r for r in unclear if r.component not in gone]
    if len(gone) == 1:
        component = gone[0]
        differs = (
            f"the log's diagnosis named {guess}, the experiment {component} (its removal alone "
            "made the fault go): they disagree, and the experiment is the proof."
            if guess and guess != component
            else None
        )
        return (
            "confirmed",
            f"with {component} switched off alone, Run B's phase passes and agrees with Run A: "
            f"{component} is at fault (confirmed by experiment).",
            component,
            differs,
            reproduce(switches_by[component], parameters),
        )
    if len(gone) > 1:
        return (
            "inconclusive",
            f"the fault went with each of {', '.join(gone)} switched off: no single component is proven.",
            None,
            None,
            None,
        )
    if unclear:
        said = "; ".join(f"{r.component} off: {r.why}" for r in unclear)
        return (
            "inconclusive",
            f"no run made the fault go; inconclusive runs: {said}",
            None,
            None,
            None,
        )
    return (
        "not_confirmed",
        "the fault stayed with each component switched off in turn"
        + (f" ({', '.join(r.component for r in runs)})" if runs else "")
        + ": no FlagOS component is proven at fault alone.",
        None,
        None,
        None,
    )


__all__ = [
    "COMPONENTS",
    "GONE",
    "NO_EFFECT",
    "NOT_ALONE",
    "OTHER",
    "SAME",
    "Switch",
    "own_run",
    "still_ran",
    "took_along",
    "widened",
    "conclude",
    "flaggems_kernels",
    "hypothesis",
    "order",
    "plan",
    "reproduce",
    "suspects",
    "switches",
    "why_not",
]
