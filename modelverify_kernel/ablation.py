"""Step after the verdict, before the culprit-op search: prove which FlagOS component breaks
Run B — a strategy handed a `run_phase` callable; it never imports the driver.

When Run A passed and Run B failed or diverged, Run B's first faulty phase is run again with one
component switched off at a time (FlagGems, FlagCX, the FL plugin: `analysis.ablation` says how
and in which order), each run judged by `analysis.experiments.judge_step` against Run A. Each run
is its own attempt under `experiments/ablation/NN/` (log, result, record; the folder cleared
first); progress goes to `save` after every run, so an interrupted ablation keeps what it found.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .analysis import ablation as plan_of
from .analysis.experiments import fault_of, judge_step
from .analysis.judge import Judgement, tolerances
from .bisect import RunPhase
from .records import Ablation, AblationRun, Evidence


def folder(out_dir: Path) -> Path:
    """Where the ablation keeps its runs and its record."""
    return Path(out_dir) / "experiments" / "ablation"


def record_path(out_dir: Path) -> Path:
    return folder(out_dir) / "ablation.json"


def ablate(
    evidence: Evidence,
    judgement: Judgement,
    run_phase: RunPhase,
    out_dir: Path,
    *,
    on_run: Callable[[AblationRun], None] | None = None,
    save: Callable[[Ablation], None] | None = None,
) -> Ablation:
    """The component ablation for a judged verification (or why none is made)."""
    params = evidence.parameters
    asked = bool(params.get("ablate", True))
    run_b = evidence.runs.get("run_b", {})
    reason = plan_of.why_not(asked, judgement.verdict, run_b)
    if reason:
        return Ablation(status="off" if not asked else "not_run", reason=f"No ablation: {reason}")
    phase, guess, order, cannot = plan_of.plan(evidence, judgement.activity, judgement.comparisons)
    fault = fault_of(run_b, judgement.comparisons)
    if phase is None or fault is None:
        return Ablation(
            status="not_run", reason="No ablation: no phase of Run B failed or diverged."
        )
    save = save or (lambda a: None)
    started = time.monotonic()
    timeout = float(params.get("ablate_timeout") or 3600)
    tol = tolerances(params)
    runs: list[AblationRun] = []
    by_name = {s.component: s for s in order}

    def record(status: str, why: str, component=None, differs=None, flags=None) -> Ablation:
        a = Ablation(
            status=status,
            reason=why,
            phase=phase,
            hypothesis=guess,
            order=tuple(s.component for s in order),
            not_tried=dict(cannot),
            runs=tuple(runs),
            component=component,
            disagrees=differs,
            reproduce=flags,
            elapsed_s=round(time.monotonic() - started, 1),
        )
        save(a)
        return a

    if not order:
        return record("not_run", "No ablation: no FlagOS component can be switched off here.")
    record("stopped", "interrupted before its first run")
    for number, switch in enumerate(order, 1):
        if time.monotonic() - started >= timeout:
            return record(
                "stopped", f"ablate_timeout={timeout:g} s was used after {len(runs)} run(s)."
            )
        where = folder(out_dir) / f"{number:02d}"
        shutil.rmtree(where, ignore_errors=True)
        pr = run_phase(
            "run_b", phase, env=dict(switch.env), unset=tuple(switch.unset), folder=where
        )
        outcome, why = judge_step(pr, evidence.runs["run_a"][phase], tol, fault)
        seen = plan_of.acted(switch, pr)
        if seen:
            outcome, why = plan_of.NO_EFFECT, f"the switch had no effect: {seen}"
        runs.append(
            AblationRun(
                number=number,
                component=switch.component,
                phase=phase,
                env=dict(switch.env),
                unset=tuple(switch.unset),
                outcome=outcome,
                why=why,
                duration_s=pr.duration_s,
                log=_rel(pr.log, out_dir),
                result_file=_rel(pr.result_file, out_dir),
            )
        )
        if on_run is not None:
            on_run(runs[-1])
        record("stopped", f"interrupted after run {number} ({switch.component} off: {outcome})")
        if outcome == plan_of.GONE:  # proven: the components after it need no run
            break
    return record(*plan_of.conclude(runs, guess, by_name, params))


def _rel(path: str | None, root: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
