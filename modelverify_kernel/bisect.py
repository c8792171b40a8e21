"""Step after the verdict: name the FlagGems kernel(s) that break Run B.

When Run A passed and Run B failed or diverged with FlagGems active, Run B's first faulty phase
(offline when it shows the fault) is run again with subsets of the FlagGems kernels that ran
switched off through the stack's own switch — the FL plugin's `VLLM_FL_FLAGOS_BLACKLIST`, or,
where FlagGems is enabled without the plugin, our recorder's `MODELVERIFY_FLAGGEMS_UNUSED`,
which joins `flag_gems.enable(unused=…)` inside the engine. The search runs over the kernels
left *on* (adaptive group testing, see `narrow`) and finds a smallest set whose kernels, on
together, still bring the fault back — so two kernels that only fail together are both found.
A final Run B, both phases, with the culprits off must pass and agree with Run A before they
are reported.

Each step is a phase run of its own under `bisect/NN/` (log, result, record) judged by the
same classification and comparison as the verification; the verification's own attempts are
untouched. Progress is written to `bisect/bisection.json` after every step, so an interrupted
search leaves every finished step on disk and says where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import compare, records, runs
from .records import Bisection, BisectStep, PhaseResult
from .vocabulary import PHASES, PLUGIN_SWITCH, RECORDER_SWITCH, Layout

if TYPE_CHECKING:
    from .pipeline import Verification

SEARCHED = ("MULTICHIP_ERROR", "OUTPUT_MISMATCH")


class _Stop(Exception):
    """The budget (steps or time) ran out."""


def ops_that_ran(pr: PhaseResult) -> list[str]:
    """The FlagGems kernels a phase's processes ran, by the name FlagGems' op lists use.

    A crash stops the phase at the first broken kernel, so the search adds the kernels that ran
    in its own steps too (a kernel that runs only once another is off can be half of a pair).
    Kernels registered through torch.library are listed by their function name (what
    `enable(unused=…)` and the plugin's blacklist match). FlagGems code the plugin's own ops call
    directly is switched by the plugin per op, under vLLM's name for the op (`rms_norm` for the
    RMSNorm it replaces): those names stand for it when the plugin's ops ran, else the kernel's.
    """
    events = pr.result.get("stack_evidence") or []
    plugin_ops = {
        str(e["vllm_op"]) for e in events if e.get("event") == "plugin_op_ran" and e.get("vllm_op")
    }
    names = set(plugin_ops)
    for e in events:
        if e.get("event") != "flaggems_op_ran":
            continue
        if e.get("via") == "aten" and e.get("fn"):
            names.add(str(e["fn"]).rsplit(".", 1)[-1])
        elif e.get("op") and not plugin_ops:
            names.add(str(e["op"]))
    return sorted(names)


def faulty_phase(v: Verification) -> tuple[str | None, str]:
    """Run B's first failing phase, else its first diverging one; why, in words."""
    b = v.runs["run_b"]
    for phase in PHASES:
        if b[phase].status == "FAIL":
            return phase, f"Run B's {phase} phase failed"
    for c in sorted(v.comparisons, key=lambda c: PHASES.index(c.phase)):
        if c.mismatch:
            return c.phase, f"Run B's {c.phase} outputs diverge from Run A's"
    return None, "no phase of Run B failed or diverged"


def switch_for(v: Verification) -> str:
    """The plugin's own blacklist where the FL plugin ran in Run B, else our recorder's switch."""
    plugin = v.activity.get("run_b", {}).get("plugin")
    return PLUGIN_SWITCH if plugin is not None and plugin.loaded else RECORDER_SWITCH


def why_not(v: Verification) -> str | None:
    """Why no search is made (point 1 of issue 13), or None when one should be."""
    if not v.params.bisect:
        return "bisect=False was asked."
    verdict = v.verdict
    if verdict is None or verdict.conclusion not in SEARCHED:
        name = verdict.conclusion if verdict else "no verdict yet"
        return (
            f"the verdict is {name}: a culprit op is searched only when Run A passed and Run B failed "
            "(MULTICHIP_ERROR) or diverged (OUTPUT_MISMATCH)."
        )
    gems = v.activity.get("run_b", {}).get("FlagGems")
    if gems is None or gems.status != "active":
        return "FlagGems was not active in Run B, so none of its kernels can be at fault."
    phase, _ = faulty_phase(v)
    if phase is None:
        return "no phase of Run B failed or diverged."
    if not ops_that_ran(v.runs["run_b"][phase]):
        return (
            f"Run B's {phase} phase recorded no FlagGems kernel that ran (it may have failed before the first "
            "one), so there is nothing to switch off."
        )
    return None


def narrow(items: Sequence[str], fails: Callable[[frozenset[str]], bool]) -> list[str]:
    """A smallest set of `items` (kernels left on) for which `fails` still holds.

    `fails(items)` is known to hold and `fails(∅)` not (the all-off step ran first). Adaptive
    group testing, as in QuickXplain: a binary search for the shortest prefix of the candidates
    that, on together with the culprits found so far, brings the fault back — its last kernel is
    a culprit; then, unless the culprits alone bring it back, the same search among the kernels
    before it. k culprits among n kernels take about k·(⌈log2 n⌉ + 1) steps — one culprit
    ⌈log2 n⌉ + 1, a pair that only fails together about twice that. Each kernel found is needed:
    without it, what is left lies inside a prefix that passed. Results are cached: no set runs twice.
    """
    seen: dict[frozenset[str], bool] = {frozenset(items): True}

    def test(subset: Iterable[str]) -> bool:
        key = frozenset(subset)
        if key not in seen:
            seen[key] = fails(key)
        return seen[key]

    culprits: list[str] = []
    candidates = list(items)
    while candidates and not (culprits and test(culprits)):
        lo, hi = 1, len(candidates)  # culprits + candidates[:hi] brings the fault back
        while lo < hi:
            mid = (lo + hi) // 2
            if test([*culprits, *candidates[:mid]]):
                hi = mid
            else:
                lo = mid + 1
        culprits.append(candidates[lo - 1])
        candidates = candidates[: lo - 1]
    return [o for o in items if o in culprits]


class _Search:
    """One search: runs the steps, keeps the budget, writes progress after every step."""

    def __init__(self, v: Verification, on_step: Callable[[BisectStep], None] | None) -> None:
        self.v = v
        self.on_step = on_step or (lambda step: None)
        self.phase, self.why = faulty_phase(v)
        self.ops = tuple(ops_that_ran(v.runs["run_b"][self.phase])) if self.phase else ()
        self.switch = switch_for(v)
        self.layout = Layout(v.out_dir)
        self.started = time.monotonic()
        self.steps: list[BisectStep] = []
        self.confirm: list[BisectStep] = []
        self.smallest: tuple[str, ...] = self.ops
        self.last_ran: set[str] = set()
        self.outcomes: dict[
            frozenset[str], bool
        ] = {}  # kernels off -> the fault showed; no set runs twice

    def record(self, status: str, reason: str, culprits: Iterable[str] = ()) -> Bisection:
        result = Bisection(
            status=status,
            reason=reason,
            phase=self.phase,
            switch=self.switch,
            ops=self.ops,
            culprit_ops=tuple(culprits),
            steps=tuple(self.steps),
            confirm=tuple(self.confirm),
            elapsed_s=round(time.monotonic() - self.started, 1),
        )
        records.write(self.layout.bisection, result, self.v.redactor().data)
        return result

    def budget_left(self) -> None:
        p = self.v.params
        if len(self.steps) >= p.bisect_max_steps:
            raise _Stop(f"bisect_max_steps={p.bisect_max_steps} steps were used")
        if time.monotonic() - self.started >= p.bisect_timeout:
            raise _Stop(f"bisect_timeout={p.bisect_timeout} s was used")

    def run(self, phase: str, disabled: Iterable[str], folder: Path, number: int) -> BisectStep:
        """One phase of Run B with `disabled` switched off, judged against Run A's same phase."""
        v = self.v
        target, scripts = v._open()
        spec = v.spec("run_b")
        given = [o for o in spec.env_set.get(self.switch, "").split(",") if o]
        off = tuple(sorted(set(disabled)))
        env = {**spec.env_set, self.switch: ",".join(dict.fromkeys([*given, *off]))}
        spec = replace(
            spec, env_set=env, env_unset=tuple(n for n in spec.env_unset if n != self.switch)
        )
        assert v.model is not None and v.model.path and v.tp
        pr = runs.run_phase(v.params, target, scripts, spec, phase, v.model.path, v.tp, folder)
        self.last_ran = set(ops_that_ran(pr))
        outcome, why = self.judge(pr)
        return BisectStep(
            number=number,
            phase=phase,
            disabled=off,
            outcome=outcome,
            why=why,
            duration_s=pr.duration_s,
            log=_rel(pr.log, v.out_dir),
            result_file=_rel(pr.result_file, v.out_dir),
        )

    def judge(self, pr: PhaseResult) -> tuple[str, str]:
        """The same rules as the verification: the phase must pass and its outputs agree with Run A's."""
        if pr.status != "PASS":
            diagnosis = pr.diagnosis or {}
            root, component = diagnosis.get("error"), diagnosis.get("component")
            return "fail", f"{root or pr.error}" + (
                f" (diagnosed: {component})" if component else ""
            )
        a = self.v.runs["run_a"][pr.phase]
        c = compare.compare_phase(
            pr.phase,
            a.result.get("outputs") or [],
            pr.result.get("outputs") or [],
            self.v.tolerances(),
        )
        if c.mismatch_reason:
            return "fail", c.mismatch_reason
        return "pass", "passed and agrees with Run A"

    def fails_with_on(self, on: frozenset[str]) -> bool:
        """A search step: the kernels in `on` stay on, every other kernel that ran is switched off."""
        assert self.phase is not None
        off = frozenset(o for o in self.ops if o not in on)
        if (
            off in self.outcomes
        ):  # the same kernels were off in an earlier step (before the search grew)
            return self.outcomes[off]
        self.budget_left()
        number = len(self.steps) + 1
        step = self.run(self.phase, off, self.layout.bisect_step(number), number)
        self.outcomes[off] = step.outcome == "fail"
        self.steps.append(step)
        if step.outcome == "fail" and len(on) < len(self.smallest):
            self.smallest = tuple(sorted(on))
        self.on_step(step)
        self.record(
            "stopped",
            f"interrupted after step {number} (narrowed to {', '.join(self.smallest)})",
            self.smallest,
        )
        return step.outcome == "fail"

    def search(self) -> Bisection:
        """Step 0 switches every kernel that ran off; then narrow, confirm, and — when the fault
        survives the culprits being off — narrow again among the kernels left (another culprit)."""
        assert self.phase is not None
        self.record("stopped", "interrupted before its first step")
        culprits: list[str] = []
        try:
            while True:  # every kernel that ran off; kernels that run only then join the search
                if self.fails_with_on(frozenset()):
                    return self.record(
                        "not_found",
                        f"with every FlagGems kernel that ran switched off ({', '.join(self.ops)}), Run B's "
                        f"{self.phase} phase still fails or diverges: the fault is outside these kernels (or "
                        f"{self.switch} did not reach FlagGems in this stack version); no op is blamed.",
                    )
                new = self.last_ran - set(self.ops)
                if not new:
                    break
                self.ops = tuple(
                    sorted({*self.ops, *new})
                )  # they ran only once the others were off
                self.smallest = self.ops
            remaining = list(self.ops)
            while True:
                found = narrow(remaining, lambda on: self.fails_with_on(on))
                culprits += found
                confirmed = self.confirm_culprits(culprits)
                left = [o for o in remaining if o not in found]
                searched = next(s for s in reversed(self.confirm) if s.phase == self.phase)
                if confirmed.status == "found" or searched.outcome == "pass" or not left:
                    return confirmed
                remaining = (
                    left  # the fault is still there with these off: another kernel brings it
                )
        except _Stop as stop:
            suspects = culprits or self.smallest
            return self.record(
                "stopped",
                f"stopped after {len(self.steps)} step(s): {stop}; narrowed to "
                f"{', '.join(suspects)} (not confirmed). Raise the limit to finish.",
                suspects,
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
        if all(s.outcome == "pass" for s in self.confirm):
            return self.record(
                "found",
                f"with {self.switch}={','.join(culprits)} Run B passes both phases and agrees "
                f"with Run A: {names} {'is' if len(culprits) == 1 else 'are'} at fault.",
                culprits,
            )
        bad = next(s for s in self.confirm if s.outcome == "fail")
        return self.record(
            "unconfirmed",
            f"the search narrowed the fault to {names}, but Run B with them off still "
            f"fails its {bad.phase} phase ({bad.why}); no op is blamed.",
            culprits,
        )


def search(v: Verification, on_step: Callable[[BisectStep], None] | None = None) -> Bisection:
    """The culprit-op search for a decided verification (or why none is made)."""
    reason = why_not(v)
    if reason:
        status = "off" if not v.params.bisect else "not_run"
        return Bisection(status=status, reason=f"No culprit-op search: {reason}")
    return _Search(v, on_step).search()


def _rel(path: str | None, root: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
