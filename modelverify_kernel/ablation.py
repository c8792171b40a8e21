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
from .records import Ablation, AblationRun, Evidence, PhaseResult, relative_to_output

# At most this many runs: one per component, and two more for FlagGems kernels that run only once
# the others are off.
MAX_RUNS = 5


def folder(out_dir: Path) -> Path:
    """Where the ablation keeps its runs and its record."""
    return Path(out_dir) / "experiments" / "ablation"


def record_path(out_dir: Path) -> Path:
    return folder(out_dir) / "ablation.json"


class ComponentAblation:
    """One ablation: runs Run B's faulty phase once per component off, saves after every run."""

    def __init__(
        self,
        evidence: Evidence,
        judgement: Judgement,
        run_phase: RunPhase,
        out_dir: Path,
        save: Callable[[Ablation], None],
        on_run: Callable[[AblationRun], None],
    ) -> None:
        self.evidence, self.run_phase, self.out_dir = evidence, run_phase, Path(out_dir)
        self.save, self.on_run = save, on_run
        self.params = evidence.parameters
        self.run_b = evidence.runs.get("run_b", {})
        self.phase, self.guess, self.order, self.cannot = plan_of.plan(
            evidence, judgement.activity, judgement.comparisons
        )
        self.fault = fault_of(self.run_b, judgement.comparisons)
        self.suspects = tuple(plan_of.suspects(judgement.activity.get("run_b", {})))
        gems = judgement.activity.get("run_b", {}).get("FlagGems")
        self.gems_active = gems is not None and gems.status == "active"
        self.tol = tolerances(self.params)
        self.timeout = float(self.params.get("ablate_timeout") or 1800)
        self.started = time.monotonic()
        self.runs: list[AblationRun] = []
        self.switches = {s.component: s for s in self.order}  # as last run (FlagGems may widen)
        self.last: PhaseResult | None = None

    def record(self, status: str, why: str, component=None, differs=None, flags=None) -> Ablation:
        a = Ablation(
            status=status,
            reason=why,
            phase=self.phase,
            hypothesis=self.guess,
            suspects=self.suspects,
            order=tuple(s.component for s in self.order),
            not_tried=dict(self.cannot),
            runs=tuple(self.runs),
            component=component,
            disagrees=differs,
            reproduce=flags,
            elapsed_s=round(time.monotonic() - self.started, 1),
        )
        self.save(a)
        return a

    def run(self, number: int, switch: plan_of.Switch) -> AblationRun:
        """Run B's faulty phase with `switch`'s component off, in its own cleared folder, judged
        against Run A; a component still at work in the run's own evidence had no switch."""
        assert self.phase is not None
        where = folder(self.out_dir) / f"{number:02d}"
        shutil.rmtree(where, ignore_errors=True)
        pr = self.last = self.run_phase(
            "run_b", self.phase, env=dict(switch.env), unset=tuple(switch.unset), folder=where
        )
        outcome, why = judge_step(pr, self.evidence.runs["run_a"][self.phase], self.tol, self.fault)
        ran = plan_of.still_ran(switch, pr)
        along = plan_of.took_along(switch, pr, self.gems_active)
        if ran:
            outcome = plan_of.NO_EFFECT
            why = f"the switch had no effect: FlagGems kernels still ran ({', '.join(ran[:8])})"
        elif along and outcome == plan_of.GONE:
            outcome = plan_of.NOT_ALONE
            why = (
                f"the fault went, but {' and '.join(along)} went with {switch.component} (no "
                f"{' or '.join(along)} code ran in this run): it cannot tell them apart"
            )
        return AblationRun(
            number=number,
            component=switch.component,
            phase=self.phase,
            env=dict(switch.env),
            unset=tuple(switch.unset),
            outcome=outcome,
            why=why,
            duration_s=pr.duration_s,
            log=relative_to_output(pr.log, self.out_dir),
            result_file=relative_to_output(pr.result_file, self.out_dir),
            took_along=tuple(along),
        )

    def ablate(self) -> Ablation:
        """Each component off in turn, until one makes the fault go (or the time is up)."""
        if self.phase is None or self.fault is None:
            return Ablation("not_run", "No ablation: no phase of Run B failed or diverged.")
        if not self.order:
            return self.record(
                "not_run", "No ablation: no FlagOS component can be switched off here."
            )
        self.record("stopped", "interrupted before its first run")
        for switch in self.order:
            while True:  # FlagGems: kernels that ran only once the others were off join the switch
                if time.monotonic() - self.started >= self.timeout:
                    return self.record(
                        "stopped",
                        f"ablate_timeout={self.timeout:g} s was used after {len(self.runs)} run(s).",
                    )
                number = len(self.runs) + 1
                self.runs.append(self.run(number, switch))
                self.on_run(self.runs[-1])
                outcome = self.runs[-1].outcome
                self.record(
                    "stopped", f"interrupted after run {number} ({switch.component} off: {outcome})"
                )
                wider = plan_of.widened(switch, plan_of.still_ran(switch, self.last))
                if outcome != plan_of.NO_EFFECT or wider is None or number >= MAX_RUNS:
                    break
                switch = self.switches[switch.component] = wider
            if outcome == plan_of.GONE:  # proven: the components after it need no run
                break
        return self.record(*plan_of.conclude(self.runs, self.guess, self.switches, self.params))


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
    asked = bool(evidence.parameters.get("ablate", True))
    reason = plan_of.why_not(asked, judgement.verdict, evidence.runs.get("run_b", {}))
    if reason:
        return Ablation(status="off" if not asked else "not_run", reason=f"No ablation: {reason}")
    return ComponentAblation(
        evidence,
        judgement,
        run_phase,
        out_dir,
        save or (lambda a: None),
        on_run or (lambda r: None),
    ).ablate()
