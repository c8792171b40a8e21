"""The culprit-op search's planning and judgement, with no process in sight.

Which phase of Run B is at fault, which FlagGems kernels ran in it, which switch turns them off,
whether a search is made at all, how to narrow the kernels left on (adaptive group testing) and
how one step is judged: the strategy that runs the steps (`bisect.py`) asks these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..records import PhaseComparison, PhaseResult, Verdict
from ..vocabulary import PHASES, PLUGIN_SWITCH, RECORDER_SWITCH
from . import compare
from .gate import ComponentActivity
from .verdict import failure_signature

SEARCHED = ("MULTICHIP_ERROR", "OUTPUT_MISMATCH")


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


def faulty_phase(
    run_b: Mapping[str, PhaseResult], comparisons: Sequence[PhaseComparison]
) -> tuple[str | None, str]:
    """Run B's first failing phase, else its first diverging one; why, in words."""
    for phase in PHASES:
        if run_b[phase].status == "FAIL":
            return phase, f"Run B's {phase} phase failed"
    for c in sorted(comparisons, key=lambda c: PHASES.index(c.phase)):
        if c.mismatch:
            return c.phase, f"Run B's {c.phase} outputs diverge from Run A's"
    return None, "no phase of Run B failed or diverged"


def registered_ops(pr: PhaseResult) -> list[str]:
    """The FlagGems ops a phase's processes took over, by the function name `enable(unused=…)`
    matches — each torch.library registration's function, else `all_registered_ops()` as
    `enable()` reported it, else its op keys: what can be switched off when none was seen
    running."""
    events = pr.result.get("stack_evidence") or []
    enabled = [e for e in events if e.get("event") == "flaggems_enabled"]
    for names in (
        {
            str(e.get("fn") or "").rsplit(".", 1)[-1]
            for e in events
            if e.get("event") == "flaggems_registered"
        },
        {str(o) for e in enabled for o in e.get("registered_ops") or ()},
        {str(o) for e in enabled for o in e.get("registered") or ()},
    ):
        if any(names):
            return sorted(n for n in names if n)
    return []


# The channels of evidence the search reads, strongest first (Bisection.channel).
RAN, OPLOG, REGISTERED = "ran", "oplog", "registered"


def searchable_ops(pr: PhaseResult) -> tuple[list[str], str | None]:
    """The kernels to search and the channel they came from, strongest first: kernels recorded
    running (ATen or direct calls, the plugin's own ops); FlagGems' own op log; the ops taken
    over, when nothing was seen running (433 ops cost about ⌈log2 433⌉ + 2 steps more)."""
    events = pr.result.get("stack_evidence") or []
    ran = [e for e in events if e.get("event") == "flaggems_op_ran" and e.get("via") != "oplog"]
    if ran or any(e.get("event") == "plugin_op_ran" for e in events):
        return ops_that_ran(pr), RAN
    if any(e.get("event") == "flaggems_op_ran" for e in events):
        return ops_that_ran(pr), OPLOG
    registered = registered_ops(pr)
    return registered, (REGISTERED if registered else None)


def switches_for(pr: PhaseResult, plugin_list_given: bool = False) -> tuple[str, ...]:
    """The switches a step sets: the recorder's own (joins `flag_gems.enable(unused=…)` /
    leaves `only_enable(include=…)` in every engine process) always; the plugin's blacklist too
    only where the evidence shows the plugin applies its lists — its own op dispatch recorded,
    or an enable call carrying the blacklist Run B was given. A plugin merely loaded proves
    nothing (issue 19: the 2025-12 plugin never reads the variable)."""
    events = pr.result.get("stack_evidence") or []
    dispatch = any(e.get("event") == "plugin_op_ran" for e in events)
    carried = plugin_list_given and any(
        e.get("event") == "flaggems_enabled" and e.get("unused") for e in events
    )
    return (RECORDER_SWITCH, PLUGIN_SWITCH) if dispatch or carried else (RECORDER_SWITCH,)


def switch_names(event: dict, plugin_op_of: Mapping[str, str]) -> set[str]:
    """The names a FlagGems run event can be switched off by: the op, the kernel function, and —
    when one of the plugin's own ops called it — vLLM's name for that op (the plugin's list)."""
    names = {str(event.get("op") or ""), str(event.get("fn") or "").rsplit(".", 1)[-1]}
    names.add(plugin_op_of.get(str(event.get("caller")), ""))
    return names - {""}


def plugin_ops(events: Iterable[dict]) -> dict[str, str]:
    """A plugin op's module -> vLLM's name for it (how the plugin switches it per op)."""
    return {
        str(e.get("cls") or "").rsplit(".", 1)[0]: str(e["vllm_op"])
        for e in events
        if e.get("event") == "plugin_op_ran" and e.get("vllm_op")
    }


def switched_off_that_ran(pr: PhaseResult, off: Iterable[str]) -> dict[str, list[str]]:
    """The kernels switched off that a step's own evidence shows running, by process: where any
    did, the switch did not reach FlagGems and the step proves nothing."""
    off = set(off)
    events = pr.result.get("stack_evidence") or []
    plugin_op_of = plugin_ops(events)
    seen: dict[str, set[str]] = {}
    for e in events:
        if e.get("event") == "flaggems_op_ran":
            for name in switch_names(e, plugin_op_of) & off:
                seen.setdefault(f"pid {e.get('pid', '?')}", set()).add(name)
    return {pid: sorted(names) for pid, names in sorted(seen.items())}


def why_not(
    asked: bool,
    verdict: Verdict | None,
    run_b_activity: Mapping[str, ComponentActivity],
    run_b: Mapping[str, PhaseResult],
    comparisons: Sequence[PhaseComparison],
) -> str | None:
    """Why no search is made (point 1 of issue 13), or None when one should be."""
    if not asked:
        return "bisect=False was asked."
    if verdict is None or verdict.conclusion not in SEARCHED:
        name = verdict.conclusion if verdict else "no verdict yet"
        return (
            f"the verdict is {name}: a culprit op is searched only when Run A passed and Run B failed "
            "(MULTICHIP_ERROR) or diverged (OUTPUT_MISMATCH)."
        )
    gems = run_b_activity.get("FlagGems")
    if gems is None or gems.status != "active":
        return "FlagGems was not active in Run B, so none of its kernels can be at fault."
    phase, _ = faulty_phase(run_b, comparisons)
    if phase is None:
        return "no phase of Run B failed or diverged."
    if not searchable_ops(run_b[phase])[0]:
        return (
            f"Run B's {phase} phase recorded no FlagGems kernel that ran and no op FlagGems took "
            "over (it may have failed before enabling it), so there is nothing to switch off."
        )
    return None


@dataclass(frozen=True)
class Fault:
    """What an experiment reproduces or removes: Run B's faulty phase as the verification judged
    it — a failure (with its signature) or outputs that drift from Run A's."""

    phase: str
    kind: str  # "fail" | "diverge"
    signature: str | None = None  # kind "fail": the failure's normalised signature
    detail: str = ""


def fault_of(
    run_b: Mapping[str, PhaseResult], comparisons: Sequence[PhaseComparison]
) -> Fault | None:
    """Run B's first failing phase (its signature), else its first diverging one."""
    phase, _ = faulty_phase(run_b, comparisons)
    if phase is None:
        return None
    pr = run_b[phase]
    if pr.status == "FAIL":
        return Fault(phase, "fail", failure_signature(pr), pr.error or "")
    c = next(c for c in comparisons if c.phase == phase)
    return Fault(phase, "diverge", None, c.mismatch_reason or "")


# A step's three outcomes: the fault stays, it is gone, or another failure took its place.
SAME, GONE, OTHER = "fail", "pass", "other"


def judge_step(
    pr: PhaseResult, run_a_phase: PhaseResult, tol: compare.Tolerances, fault: Fault | None = None
) -> tuple[str, str]:
    """One experiment's run by the verification's own rules, against the fault searched:
    SAME (the same failure signature, or the same drift against Run A), GONE (it passed and
    agrees with Run A), OTHER (a different failure, or drift where a crash was searched):
    inconclusive, never read as the fault staying. Without `fault`, any failure is SAME."""
    if pr.status != "PASS":
        diagnosis = pr.diagnosis or {}
        root, component = diagnosis.get("error"), diagnosis.get("component")
        why = f"{root or pr.error}" + (f" (diagnosed: {component})" if component else "")
        if fault is None or (fault.kind == "fail" and failure_signature(pr) == fault.signature):
            return SAME, why
        return OTHER, f"another failure: {why} — not the one searched: {_searched(fault)}"
    c = compare.compare_phase(
        pr.phase, run_a_phase.result.get("outputs") or [], pr.result.get("outputs") or [], tol
    )
    if not c.mismatch_reason:
        return GONE, "passed and agrees with Run A"
    if fault is None or fault.kind == "diverge":
        return SAME, c.mismatch_reason
    return OTHER, f"the failure searched is gone, but the outputs diverge: {c.mismatch_reason}"


def _searched(fault: Fault) -> str:
    """The fault searched, short: a step's line leads with what the step itself did."""
    text = fault.signature or fault.detail or fault.kind
    return text if len(text) <= 160 else text[:157].rstrip() + "…"


class Inconclusive(Exception):
    """The search cannot tell: every split left ended in another failure than the one searched,
    or the kernels it found do not bring the fault back on their own. Its text ends in "was"."""


def narrow(
    items: Sequence[str], fails: Callable[[frozenset[str]], bool | None], passing: int = 0
) -> list[str]:
    """A smallest set of `items` (kernels left on) for which `fails` still holds.

    `fails(items)` is known to hold and `fails(∅)` not (the all-off step ran first); `passing`
    more: `fails(items[:passing])` is known not to hold either (kernels that ran only in the
    all-off step, on there while the rest was off), so the first search starts above it. Adaptive
    group testing, as in QuickXplain: a binary search for the shortest prefix of the candidates
    that, on together with the culprits found so far, brings the fault back — its last kernel is
    a culprit; then, unless the culprits alone bring it back, the same search among the kernels
    before it. k culprits among n kernels take about k·(⌈log2 n⌉ + 1) steps — one culprit
    ⌈log2 n⌉ + 1, a pair that only fails together about twice that. Each kernel found is needed:
    without it, what is left lies inside a prefix that passed. Results are cached: no set runs twice.

    `fails` answers None for an inconclusive step (another failure). Switching off only some
    kernels can break one left on (on an H100, every prefix that held FlagGems' `copy_` and not
    its `to_copy` ended in an illegal memory access), so an inconclusive split is asked the other
    way round — the kernels above it on instead of those below (`_split`) — and the way that
    answered is asked first from then on. That answer assumes one culprit left; the kernels found
    must bring the fault back on their own, else the search runs again asking prefixes only (what
    ran is reused). Where no way answers, another split point of the interval is tried, and where
    none is left each suspect is tried alone; `Inconclusive` when that too proves nothing.
    """
    seen: dict[frozenset[str], bool | None] = {frozenset(items): True}

    def test(subset: Iterable[str]) -> bool | None:
        key = frozenset(subset)
        if key not in seen:
            seen[key] = fails(key)
        return seen[key]

    try:
        return _narrow(items, test, passing, other_way=True)
    except Inconclusive:
        return _narrow(items, test, passing, other_way=False)


def _narrow(
    items: Sequence[str],
    test: Callable[[Iterable[str]], bool | None],
    passing: int,
    other_way: bool,
) -> list[str]:
    """`narrow`'s search, asking splits the other way round too or not; the kernels found are
    checked to bring the fault back on their own."""
    culprits: list[str] = []
    candidates = list(items)
    upper_first = False
    while candidates and not (culprits and test(culprits)):
        # culprits + candidates[:hi] brings the fault back, candidates[:lo-1] does not
        lo, hi = (passing if not culprits else 0) + 1, len(candidates)
        unknown: set[int] = set()
        while lo < hi:
            splits = [m for m in range(lo, hi) if m not in unknown]
            if not splits:
                lo = hi = _single_out([*culprits, *candidates[: lo - 1]], candidates, lo, hi, test)
                break
            mid = splits[len(splits) // 2]
            if other_way:
                answer, upper_first = _split(culprits, candidates, (mid, hi), test, upper_first)
            else:
                answer = test([*culprits, *candidates[:mid]])
            if answer is None:
                unknown.add(mid)
            elif answer:
                hi = mid
            else:
                lo = mid + 1
        culprits.append(candidates[lo - 1])
        candidates = candidates[: lo - 1]
    if test(culprits) is not True:
        found = ", ".join(culprits)
        raise Inconclusive(
            f"the search, whose kernels found ({found}) alone do not bring it back, was"
        )
    return [o for o in items if o in culprits]


def _split(
    culprits: list[str],
    candidates: Sequence[str],
    split: tuple[int, int],
    test: Callable[[Iterable[str]], bool | None],
    upper_first: bool,
) -> tuple[bool | None, bool]:
    """Does the culprit left lie in candidates[:mid]? Asked with those on (the rest off), or the
    other way round: with only candidates[mid:hi] on (and the culprits found) — the fault back
    there means no. The second way is asked only when the first proves nothing; it assumes one
    culprit left, in the interval (`_narrow` checks what it finds). Returns the answer and which
    way to ask first next time."""
    mid, hi = split
    ways = [
        lambda: test([*culprits, *candidates[:mid]]),
        lambda: _not(test([*culprits, *candidates[mid:hi]])),
    ]
    for upper in (upper_first, not upper_first):
        answer = ways[upper]()
        if answer is not None:
            return answer, upper
    return None, upper_first


def _not(answer: bool | None) -> bool | None:
    return None if answer is None else not answer


def _single_out(
    below: list[str],
    candidates: Sequence[str],
    lo: int,
    hi: int,
    test: Callable[[Iterable[str]], bool | None],
) -> int:
    """Every split of candidates[lo-1:hi] was inconclusive: each suspect on alone above what is
    known to pass (a culprit lies among them); the prefix length that ends at the culprit."""
    left = []
    for j in reversed(range(lo - 1, hi)):
        answer = test([*below, candidates[j]])
        if answer:
            return j + 1
        if answer is None:
            left.append(j)
    if len(left) == 1:
        return left[0] + 1  # every other suspect alone passes
    suspects = ", ".join(map(str, candidates[lo - 1 : hi]))
    raise Inconclusive(f"every split of {suspects}, and each of them alone, was")
