"""Step after the verdict: name the FlagGems kernel(s) that break Run B — a strategy handed a
`run_phase` callable; it never imports the driver.

When Run A passed and Run B failed or diverged with FlagGems active, Run B's first faulty phase
(offline when it shows the fault) is run again with subsets of FlagGems' kernels switched off.
Every step sets our recorder's switch `MODELVERIFY_FLAGGEMS_UNUSED` (joins
`flag_gems.enable(unused=…)` / leaves `only_enable(include=…)` in every engine process), and the
FL plugin's `VLLM_FL_FLAGOS_BLACKLIST` too only where Run B's evidence shows the plugin applies
its lists; FlagGems' own op log is on in every step (`MODELVERIFY_FLAGGEMS_OPLOG=1`). A step's
own evidence must show the kernels switched off did not run, else the search stops: the switch
had no effect (`no_effect`), and nothing is concluded from that step.

What is searched comes from the strongest channel of evidence there is (`Bisection.channel`):
kernels recorded running, FlagGems' own op log, else the ops FlagGems took over. Each step is
judged SAME / GONE / OTHER against the fault searched (`analysis.experiments.judge_step`); an
OTHER proves nothing, so another split is tried and the record says so. The search runs over the
kernels left *on* (adaptive group testing, `analysis.experiments.narrow`) and finds a smallest
set whose kernels, on together, still bring the fault back. A final Run B, both phases, with the
culprits off must pass and agree with Run A before they are reported.

Each step is a phase run of its own under `bisect/NN/` (log, result, evidence), made through the
`run_phase` it is handed; the verification's own attempts are untouched. Progress goes to `save`
after every step, so an interrupted search leaves every finished step on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .analysis.experiments import (
    GONE,
    OTHER,
    SAME,
    SEARCHED,
    Inconclusive,
    fault_of,
    faulty_phase,
    judge_step,
    narrow,
    ops_that_ran,
    searchable_ops,
    switched_off_that_ran,
    switches_for,
    why_not,
)
from .analysis.judge import Judgement, tolerances
from .records import Bisection, BisectStep, Evidence, PhaseResult, relative_to_output
from .vocabulary import OPLOG_SWITCH, PHASES, PLUGIN_SWITCH, RECORDER_SWITCH, Layout

__all__ = [
    "SEARCHED",
    "PLUGIN_SWITCH",
    "RECORDER_SWITCH",
    "Budget",
    "CulpritSearch",
    "RunPhase",
    "narrow",
    "ops_that_ran",
    "search",
]


class RunPhase(Protocol):
    """Runs one phase with `env` set and `unset` removed on top of the run's flags, its files under
    `folder`; returns the judged attempt (the driver's `Verification.run_step`)."""

    def __call__(
        self, run: str, phase: str, *, env: dict[str, str], unset: Sequence[str], folder: Path
    ) -> PhaseResult: ...


@dataclass(frozen=True)
class Budget:
    """How far a search may go: steps and seconds (bisect_max_steps, bisect_timeout)."""

    max_steps: int
    timeout_s: float

    @classmethod
    def of(cls, parameters: dict) -> Budget:
        return cls(int(parameters["bisect_max_steps"]), float(parameters["bisect_timeout"]))


class _Stop(Exception):
    """The budget (steps or time) ran out."""


class _NoEffect(Exception):
    """A step's own evidence shows kernels it switched off running: the switch did not act."""


class CulpritSearch:
    """One search: runs the steps, keeps the budget, saves progress after every step."""

    def __init__(
        self,
        evidence: Evidence,
        judgement: Judgement,
        run_phase: RunPhase,
        out_dir: Path,
        *,
        on_step: Callable[[BisectStep], None] | None = None,
        save: Callable[[Bisection], None] | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.evidence, self.run_phase, self.out_dir = evidence, run_phase, Path(out_dir)
        self.on_step = on_step or (lambda step: None)
        self.save = save or (lambda bisection: None)
        self.budget = budget or Budget.of(evidence.parameters)
        self.tol = tolerances(evidence.parameters)
        run_b = evidence.runs["run_b"]
        self.phase, self.why = faulty_phase(run_b, judgement.comparisons)
        self.fault = fault_of(run_b, judgement.comparisons)
        ops, self.channel = searchable_ops(run_b[self.phase]) if self.phase else ([], None)
        self.ops = tuple(ops)
        given = evidence.spec("run_b").env_set
        self.switches = (
            switches_for(run_b[self.phase], bool(given.get(PLUGIN_SWITCH)))
            if self.phase
            else (RECORDER_SWITCH,)
        )
        self.switch = PLUGIN_SWITCH if PLUGIN_SWITCH in self.switches else RECORDER_SWITCH
        self.layout = Layout(self.out_dir)
        self.started = time.monotonic()
        self.steps: list[BisectStep] = []
        self.confirm: list[BisectStep] = []
        self.smallest: tuple[str, ...] = self.ops
        self.last_ran: set[str] = set()
        self.passing = 0  # how many of the first ops are known to pass on alone (_all_off)
        self.outcomes: dict[frozenset[str], bool | None] = {}  # kernels off -> fault showed

    def record(self, status: str, reason: str, culprits: Iterable[str] = ()) -> Bisection:
        result = Bisection(
            status=status,
            reason=reason,
            phase=self.phase,
            switch=self.switch,
            switches=self.switches,
            channel=self.channel,
            ops=self.ops,
            culprit_ops=tuple(culprits),
            steps=tuple(self.steps),
            confirm=tuple(self.confirm),
            inconclusive_steps=tuple(s.number for s in self.steps if s.outcome == OTHER),
            elapsed_s=round(time.monotonic() - self.started, 1),
        )
        self.save(result)
        return result

    def budget_left(self) -> None:
        if len(self.steps) >= self.budget.max_steps:
            raise _Stop(f"bisect_max_steps={self.budget.max_steps} steps were used")
        if time.monotonic() - self.started >= self.budget.timeout_s:
            raise _Stop(f"bisect_timeout={self.budget.timeout_s:g} s was used")

    def env(self, off: Sequence[str]) -> dict[str, str]:
        """Every proven switch with `off` added to what Run B gave it, and FlagGems' op log on."""
        given = self.evidence.spec("run_b").env_set
        env = {OPLOG_SWITCH: "1"}
        for switch in self.switches:
            kept = [o for o in given.get(switch, "").split(",") if o]
            env[switch] = ",".join(dict.fromkeys([*kept, *off]))
        return env

    def learn_switches(self, pr: PhaseResult) -> None:
        """A step's own evidence may prove a switch Run B's could not: Run B failed before the
        plugin's own ops ran, a step with that kernel off shows them (they join the search) —
        from the next step on, the plugin's list switches them too."""
        given = bool(self.evidence.spec("run_b").env_set.get(PLUGIN_SWITCH))
        learned = [s for s in switches_for(pr, given) if s not in self.switches]
        if learned:
            self.switches = (*self.switches, *learned)
            self.switch = PLUGIN_SWITCH if PLUGIN_SWITCH in self.switches else RECORDER_SWITCH

    def run(self, phase: str, disabled: Iterable[str], folder: Path, number: int) -> BisectStep:
        """One phase of Run B with `disabled` switched off, judged against Run A's same phase and
        the fault searched (in the faulty phase; elsewhere any failure counts)."""
        off = tuple(sorted(set(disabled)))
        pr = self.run_phase("run_b", phase, env=self.env(off), unset=(), folder=folder)
        self.last_ran = set(ops_that_ran(pr))
        self.learn_switches(pr)
        fault = self.fault if self.fault and phase == self.fault.phase else None
        outcome, why = judge_step(pr, self.evidence.runs["run_a"][pr.phase], self.tol, fault)
        leaked = switched_off_that_ran(pr, off)
        step = BisectStep(
            number=number,
            phase=phase,
            disabled=off,
            outcome=outcome,
            why=why,
            duration_s=pr.duration_s,
            log=relative_to_output(pr.log, self.out_dir),
            result_file=relative_to_output(pr.result_file, self.out_dir),
            ran_switched_off={pid: tuple(ops) for pid, ops in leaked.items()},
        )
        if leaked:
            (self.confirm if folder.parent == self.layout.bisect_confirm else self.steps).append(
                step
            )
            self.on_step(step)
            seen = "; ".join(f"{pid}: {', '.join(ops)}" for pid, ops in leaked.items())
            raise _NoEffect(
                f"step {number} switched off {', '.join(off)} through "
                f"{', '.join(self.switches)}, yet its own evidence shows {seen} running"
            )
        return step

    def fails_with_on(self, on: frozenset[str]) -> bool | None:
        """A search step: the kernels in `on` stay on, every other one is switched off. True: the
        same fault; False: gone; None: another failure (inconclusive)."""
        assert self.phase is not None
        off = frozenset(o for o in self.ops if o not in on)
        if off in self.outcomes:  # the same kernels were off in an earlier step
            return self.outcomes[off]
        self.budget_left()
        number = len(self.steps) + 1
        step = self.run(self.phase, off, self.layout.bisect_step(number), number)
        answer = {SAME: True, GONE: False}.get(step.outcome)
        self.outcomes[off] = answer
        self.steps.append(step)
        if answer and len(on) < len(self.smallest):
            self.smallest = tuple(sorted(on))
        self.on_step(step)
        self.record(
            "stopped",
            f"interrupted after step {number} (narrowed to {', '.join(self.smallest)})",
            self.smallest,
        )
        return answer

    def _all_off(self) -> Bisection | None:
        """Every kernel searched off. A record when the fault survives that or another failure
        takes its place (no op is blamed), else None. Kernels that ran only in this step (a crash
        had hidden them) join the search in front: this step ran them on with the rest off and
        passed, so they can only be half of a pair, and no step is spent on them alone."""
        answer = self.fails_with_on(frozenset())
        if answer is None:
            return self.record(
                "inconclusive",
                f"with every FlagGems kernel searched switched off, Run B's {self.phase} phase "
                f"fails differently ({self.steps[-1].why}): the experiment proves nothing "
                "either way; no op is blamed.",
            )
        if answer:
            return self.record(
                "not_found",
                f"with every FlagGems kernel searched switched off ({', '.join(self.ops)}; "
                f"its own evidence shows none of them ran), Run B's {self.phase} phase "
                "still shows the same fault: it lies outside these kernels; no op is blamed.",
            )
        new = sorted(self.last_ran - set(self.ops))
        self.passing = len(new)
        self.ops = self.smallest = (*new, *self.ops)
        return None

    def search(self) -> Bisection:
        """Step 0 switches every kernel searched off; then narrow, confirm, and — when the fault
        survives the culprits being off — narrow again among the kernels left (another culprit)."""
        assert self.phase is not None
        self.record("stopped", "interrupted before its first step")
        culprits: list[str] = []
        try:
            not_found = self._all_off()
            if not_found is not None:
                return not_found
            remaining, passing = list(self.ops), self.passing
            while True:
                found = narrow(remaining, self.fails_with_on, passing)
                passing = 0
                culprits += found
                confirmed = self.confirm_culprits(culprits)
                left = [o for o in remaining if o not in found]
                searched = next(s for s in reversed(self.confirm) if s.phase == self.phase)
                if confirmed.status == "found" or searched.outcome != SAME or not left:
                    return confirmed
                remaining = left  # still there with these off: another kernel brings it
        except _Stop as stop:
            suspects = culprits or self.smallest
            return self.record(
                "stopped",
                f"stopped after {len(self.steps)} step(s): {stop}; narrowed to "
                f"{', '.join(suspects)} (not confirmed). Raise the limit to finish.",
                suspects,
            )
        except _NoEffect as no_effect:
            return self.record(
                "no_effect",
                f"the switch had no effect: {no_effect}. No op is blamed, and nothing is "
                "concluded about where the fault lies: these kernels must be switched off "
                "another way.",
            )
        except Inconclusive as inconclusive:
            numbers = ", ".join(str(s.number) for s in self.steps if s.outcome == OTHER)
            return self.record(
                "inconclusive",
                f"{inconclusive} inconclusive: step(s) {numbers} failed with another error than "
                f"the one searched; narrowed to {', '.join(culprits or self.smallest)} (not "
                "confirmed).",
                culprits or self.smallest,
            )

    def confirm_culprits(self, culprits: Sequence[str]) -> Bisection:
        """Run B, both phases, culprits off: only a passing, agreeing run makes them culprits."""
        self.confirm = []
        for phase in PHASES:
            number = len(self.steps) + len(self.confirm) + 1
            step = self.run(phase, culprits, self.layout.bisect_confirm / f"{number:02d}", number)
            self.confirm.append(step)
            self.on_step(step)
        names = ", ".join(culprits)
        if all(s.outcome == GONE for s in self.confirm):
            return self.record(
                "found",
                f"with {self.switch}={','.join(culprits)} Run B passes both phases and agrees "
                f"with Run A: {names} {'is' if len(culprits) == 1 else 'are'} at fault.",
                culprits,
            )
        bad = next(s for s in self.confirm if s.outcome != GONE)
        other = " (inconclusive)" if bad.outcome == OTHER else ""
        return self.record(
            "unconfirmed",
            f"the search narrowed the fault to {names}, but Run B with them off still "
            f"fails its {bad.phase} phase ({bad.why}){other}; no op is blamed.",
            culprits,
        )


def search(
    evidence: Evidence,
    judgement: Judgement,
    run_phase: RunPhase,
    out_dir: Path,
    *,
    on_step: Callable[[BisectStep], None] | None = None,
    save: Callable[[Bisection], None] | None = None,
    budget: Budget | None = None,
) -> Bisection:
    """The culprit-op search for a judged verification (or why none is made)."""
    asked = bool(evidence.parameters.get("bisect"))
    reason = why_not(
        asked,
        judgement.verdict,
        judgement.activity.get("run_b", {}),
        evidence.runs["run_b"],
        judgement.comparisons,
    )
    if reason:
        return Bisection(
            status="off" if not asked else "not_run", reason=f"No culprit-op search: {reason}"
        )
    return CulpritSearch(
        evidence, judgement, run_phase, out_dir, on_step=on_step, save=save, budget=budget
    ).search()
