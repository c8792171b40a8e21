"""Step 7: compare Run A and Run B outputs — same prompts, greedy, top-k logprobs.

Greedy decoding makes the two runs' tokens comparable one by one. A difference alone is not a
bug: when the two best candidates are within kernel noise of each other, a different kernel
may pick the other one (a *near-tie flip*). It is a bug when the distribution itself moved
(*changed distribution*): the top tokens or their logprobs differ beyond the tolerance. vLLM's
own rule (each side's token in the other's top-k) is too lax on flat distributions, where every
top-k token is in the other's top-k; so both sides' gaps must be small, and the logprobs of the
tokens both sides list must agree.

Per prompt, a wrong kernel that changes one op by a few percent on every token stays within
those tolerances; across all prompts it does not. So each phase also gets an *aggregate*
judgement (`AggregateJudgement`): the distribution of logprob shifts over every position whose
context both runs share, and how many prompts flipped, against the noise of a correct but
different kernel. Its rule and constants are the table in `references/output-comparison.md`,
parsed here (`load_constants`).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import AggregateJudgement, GarbageFinding, PhaseComparison, PromptComparison
from .knowledge import RuleError, default_references, plain_cell, read_table

# --------------------------------------------------------------------------- constants (references/)

CONSTANTS_FILE = "output-comparison.md"
_CONSTANTS_HEADER = ("constant", "value", "unit", "meaning", "derived from")
_CONSTANT_KINDS = {  # name -> (type, lowest allowed, highest allowed)
    "shift_p90": (float, 0.0, math.inf),
    "flip_fraction": (float, 0.0, 1.0),
    "flip_median": (float, 0.0, math.inf),
    "min_shifts": (int, 1, math.inf),
    "min_prompts_for_flips": (int, 1, math.inf),
}


class ConstantsError(ValueError):
    """The constants table in references/output-comparison.md is malformed (names file and line)."""


def load_constants(references_dir: Path | None = None) -> dict[str, float | int]:
    """The aggregate rule's constants, parsed from references/output-comparison.md (cached by mtime)."""
    path = (
        Path(references_dir) if references_dir is not None else default_references()
    ) / CONSTANTS_FILE
    if not path.is_file():
        raise ConstantsError(
            f"{path} is missing: the output comparison reads its constants from it"
        )
    return dict(_load_constants_cached(str(path.resolve()), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _load_constants_cached(path_str: str, _mtime: int) -> tuple[tuple[str, float | int], ...]:
    path = Path(path_str)
    found: dict[str, tuple[float | int, str]] = {}
    try:  # the one reader of references/ tables (analysis/knowledge.py)
        rows = list(read_table(path, _CONSTANTS_HEADER, strict=False, what="constants table"))
    except RuleError as exc:
        raise ConstantsError(str(exc)) from None
    if not rows:
        raise ConstantsError(
            f"{path}: no constants table (header: | {' | '.join(_CONSTANTS_HEADER)} |)"
        )
    for cells, where in rows:
        name, value = _constant_row(cells, where)
        if name in found:
            raise ConstantsError(
                f"{where}: constant {name!r} already defined at line {found[name][1]}"
            )
        found[name] = (value, where.rsplit(":", 1)[-1])
    missing = [n for n in _CONSTANT_KINDS if n not in found]
    if missing:
        raise ConstantsError(f"{path}: constants table lacks {', '.join(missing)}")
    return tuple((n, v) for n, (v, _) in found.items())


def _constant_row(cells: list[str], where: str) -> tuple[str, float | int]:
    """One row's name and value, checked against the constant's kind and range."""
    name, value_s = plain_cell(cells[0]), plain_cell(cells[1])
    if name not in _CONSTANT_KINDS:
        raise ConstantsError(
            f"{where}: unknown constant {name!r}; known: {', '.join(_CONSTANT_KINDS)}"
        )
    kind, low, high = _CONSTANT_KINDS[name]
    try:
        value: float | int = kind(value_s)
    except ValueError:
        raise ConstantsError(
            f"{where}: value of {name!r} must be {'an integer' if kind is int else 'a number'}, "
            f"got {value_s!r}"
        ) from None
    if not (low <= value <= high) or not math.isfinite(value):
        raise ConstantsError(
            f"{where}: value of {name!r} must lie in [{low}, {high}], got {value_s!r}"
        )
    return name, value


def _constant(name: str) -> Any:
    """A dataclass default factory: the constant's value in references/ when the object is made."""
    return lambda: load_constants()[name]


@dataclass(frozen=True)
class Tolerances:
    """Thresholds in nats (natural-log probability), see README "Output comparison".

    The aggregate ones default to references/output-comparison.md; `systematic_shift` is the
    user-facing one (the 90th-percentile shift above which a phase is systematic).
    """

    tie: float = 0.02  # two candidates this close are a tie in one run
    logprob: float = 0.05  # the same token's logprob may move this much between runs
    repeat_fraction: float = 0.8  # one token over this share of an output is garbage
    min_tokens_for_repeat: int = 8
    min_tokens_for_same_output: int = 4
    systematic_shift: float = field(default_factory=_constant("shift_p90"))
    flip_fraction: float = field(default_factory=_constant("flip_fraction"))
    flip_median: float = field(default_factory=_constant("flip_median"))
    min_shifts: int = field(default_factory=_constant("min_shifts"))
    min_prompts_for_flips: int = field(default_factory=_constant("min_prompts_for_flips"))


def _num(x: Any) -> float:
    """Logprobs are stored as numbers, or as 'nan'/'inf'/'-inf' strings when not finite."""
    if isinstance(x, (int, float)):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # chat messages
        return " / ".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


def _top(position: dict[str, Any]) -> dict[int, float]:
    top = {int(t): _num(lp) for t, lp in position.get("top", []) if t is not None}
    if position.get("token_id") is not None and position.get("logprob") is not None:
        top.setdefault(int(position["token_id"]), _num(position["logprob"]))
    return top


def judge_divergence(
    pos_a: dict[str, Any], pos_b: dict[str, Any], tol: Tolerances
) -> tuple[str, str]:
    """At the first differing position: near-tie flip, or changed distribution."""
    top_a, top_b = _top(pos_a), _top(pos_b)
    ta, tb = pos_a["token_id"], pos_b["token_id"]
    if tb not in top_a or ta not in top_b:
        return "changed_distribution", (
            f"token {tb} (Run B) is not in Run A's top-{len(top_a)} or token {ta} (Run A) not in Run B's"
        )
    gap_a, gap_b = abs(top_a[ta] - top_a[tb]), abs(top_b[ta] - top_b[tb])
    common = top_a.keys() & top_b.keys()
    moved = max((abs(top_a[t] - top_b[t]) for t in common), default=math.inf)
    if gap_a <= tol.tie and gap_b <= tol.tie and moved <= tol.logprob:
        return "near_tie_flip", (
            f"tokens {ta}/{tb} tie within {max(gap_a, gap_b):.4f} nats in both runs; "
            f"shared top tokens moved at most {moved:.4f}"
        )
    return "changed_distribution", (
        f"gap between tokens {ta}/{tb}: {gap_a:.4f} nats in Run A, {gap_b:.4f} in Run B; "
        f"shared top tokens moved up to {moved:.4f} (tolerances: tie {tol.tie}, logprob {tol.logprob})"
    )


def compare_output(
    index: int, a: dict[str, Any], b: dict[str, Any], tol: Tolerances
) -> PromptComparison:
    ids_a, ids_b = list(a.get("token_ids") or []), list(b.get("token_ids") or [])
    lps_a, lps_b = a.get("logprobs") or [], b.get("logprobs") or []
    first: int | None = None
    judgement, detail = "identical", ""
    diffs = []
    for i, (ta, tb) in enumerate(zip(ids_a, ids_b)):
        if ta != tb:
            first = i
            if i < len(lps_a) and i < len(lps_b):
                judgement, detail = judge_divergence(lps_a[i], lps_b[i], tol)
            else:
                judgement, detail = "changed_distribution", "tokens differ; no logprobs recorded"
            break
        if i < len(lps_a) and i < len(lps_b):
            diffs.append(abs(_num(lps_a[i].get("logprob")) - _num(lps_b[i].get("logprob"))))
    if first is None and len(ids_a) != len(ids_b):
        first = min(len(ids_a), len(ids_b))
        judgement, detail = "length", "one run stopped earlier (end of sequence) on the same tokens"
    if (
        judgement in ("identical", "length")
        and diffs
        and (max(diffs) > tol.logprob or any(map(math.isnan, diffs)))
    ):
        judgement = "logprob_drift"
        detail = f"same tokens, but a chosen token's logprob moved {max(diffs):.4f} nats (> {tol.logprob})"
    return PromptComparison(
        index=index,
        prompt=_prompt_text(a.get("prompt")),
        kind=a.get("kind", "completion"),
        exact_match=ids_a == ids_b,
        tokens_a=len(ids_a),
        tokens_b=len(ids_b),
        first_divergence=first,
        max_logprob_diff_prefix=round(max(diffs), 6) if diffs else None,
        judgement=judgement,
        detail=detail,
    )


def garbage_checks(outputs: Sequence[dict[str, Any]], tol: Tolerances) -> list[GarbageFinding]:
    """Signs of broken numerics in one phase's outputs, whatever the other run did."""
    found = []
    for i, o in enumerate(outputs):
        ids = list(o.get("token_ids") or [])
        if not ids or not str(o.get("text", "")).strip():
            found.append(GarbageFinding("empty", i, "no output text"))
            continue
        token, count = Counter(ids).most_common(1)[0]
        if len(ids) >= tol.min_tokens_for_repeat and count / len(ids) > tol.repeat_fraction:
            found.append(
                GarbageFinding("repetition", i, f"token {token} is {count} of {len(ids)} tokens")
            )
        values = [_num(p.get("logprob")) for p in o.get("logprobs") or []]
        values += [_num(v) for p in o.get("logprobs") or [] for _, v in p.get("top", [])]
        bad = [v for v in values if not math.isfinite(v) and v != -math.inf]
        if bad or (values and all(v == -math.inf for v in values)):
            found.append(GarbageFinding("nonfinite", i, f"{len(bad)} NaN/inf logprobs"))
    by_ids: dict[tuple[int, ...], list[int]] = {}
    for i, o in enumerate(outputs):
        ids = tuple(o.get("token_ids") or [])
        if len(ids) >= tol.min_tokens_for_same_output:
            by_ids.setdefault(ids, []).append(i)
    for idxs in by_ids.values():
        prompts = {_prompt_text(outputs[i].get("prompt")) for i in idxs}
        if len(prompts) > 1:
            for i in idxs:
                found.append(GarbageFinding("same_output", i, f"same tokens as prompts {idxs}"))
    return found


def _quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default); None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    i = int(k)
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (k - i)


def _shifts(
    a: dict[str, Any], b: dict[str, Any], c: PromptComparison
) -> tuple[list[float], list[float], int]:
    """One prompt's chosen-token shifts (common prefix), shared top-k shifts (same context), positions."""
    lps_a, lps_b = a.get("logprobs") or [], b.get("logprobs") or []
    end = c.first_divergence if c.first_divergence is not None else min(c.tokens_a, c.tokens_b)
    span = min(
        end + 1, c.tokens_a, c.tokens_b, len(lps_a), len(lps_b)
    )  # + the first divergent position
    chosen: list[float] = []
    shared: list[float] = []
    for i in range(span):
        if i < end:
            d = abs(_num(lps_a[i].get("logprob")) - _num(lps_b[i].get("logprob")))
            if math.isfinite(d):
                chosen.append(d)
        top_a, top_b = _top(lps_a[i]), _top(lps_b[i])
        for t in top_a.keys() & top_b.keys():
            d = abs(top_a[t] - top_b[t])
            if math.isfinite(d):
                shared.append(d)
    return chosen, shared, span


def _aggregate_detail(
    reason: str | None,
    flipped: int,
    prompts: int,
    shared: list[float],
    positions: int,
    tol: Tolerances,
) -> str:
    """The aggregate judgement in one sentence with its figures (the verdict quotes it)."""
    p90, median = _quantile(shared, 0.9), _quantile(shared, 0.5)
    figures = (
        f"{flipped}/{prompts} prompts flipped; the logprobs of the top-k tokens both runs list "
        + (
            f"moved by median {median:.4f}, p90 {p90:.4f}, max {max(shared):.4f} nats "
            f"({len(shared)} values at {positions} positions with the same context)"
            if shared
            else "could not be compared (no position with the same context)"
        )
    )
    if reason == "shift":
        return (
            f"{figures} — a systematic shift: the p90 is above {tol.systematic_shift} nats, more than "
            f"a correct but different kernel moved even its largest logprob in calibration."
        )
    if reason == "flips":
        return (
            f"{figures} — systematic: {flipped} of {prompts} prompts flipped "
            f"(limit {tol.flip_fraction:.0%}) while the median shift is above {tol.flip_median} nats, "
            f"which ties alone do not do."
        )
    if len(shared) < tol.min_shifts:
        return f"{figures} — too few values to judge the distribution; no sign of systematic drift."
    return (
        f"{figures} — within the noise of a correct but different kernel "
        f"(p90 limit {tol.systematic_shift} nats)."
    )


def aggregate_judgement(
    prompts: Sequence[PromptComparison],
    outputs_a: Sequence[dict],
    outputs_b: Sequence[dict],
    tol: Tolerances | None = None,
) -> AggregateJudgement:
    """Judge a phase as a whole (references/output-comparison.md): shift test, then flip test."""
    tol = tol or Tolerances()
    chosen: list[float] = []
    shared: list[float] = []
    positions = 0
    for c, a, b in zip(prompts, outputs_a, outputs_b):
        ch, sh, n = _shifts(a, b, c)
        chosen += ch
        shared += sh
        positions += n
    flipped = sum(1 for c in prompts if c.first_divergence is not None and c.judgement != "length")
    r = lambda x: None if x is None else round(x, 6)  # noqa: E731
    figures_of = dict(
        prompts_compared=len(prompts),
        prompts_flipped=flipped,
        positions_compared=positions,
        shifts_compared=len(shared),
        chosen_median=r(_quantile(chosen, 0.5)),
        chosen_p90=r(_quantile(chosen, 0.9)),
        chosen_max=r(max(chosen)) if chosen else None,
        shared_median=r(_quantile(shared, 0.5)),
        shared_p90=r(_quantile(shared, 0.9)),
        shared_max=r(max(shared)) if shared else None,
        limits={
            "shift_p90": tol.systematic_shift,
            "flip_fraction": tol.flip_fraction,
            "flip_median": tol.flip_median,
            "min_shifts": tol.min_shifts,
            "min_prompts_for_flips": tol.min_prompts_for_flips,
        },
    )
    p90, median = _quantile(shared, 0.9), _quantile(shared, 0.5)
    systematic, reason = False, None
    if len(shared) >= tol.min_shifts and p90 is not None and p90 > tol.systematic_shift:
        systematic, reason = True, "shift"
    elif (
        len(prompts) >= tol.min_prompts_for_flips
        and flipped >= tol.flip_fraction * len(prompts)
        and median is not None
        and median > tol.flip_median
    ):
        systematic, reason = True, "flips"
    detail = _aggregate_detail(reason, flipped, len(prompts), shared, positions, tol)
    return AggregateJudgement(**figures_of, systematic=systematic, reason=reason, detail=detail)


def compare_phase(
    phase: str, outputs_a: Sequence[dict], outputs_b: Sequence[dict], tol: Tolerances | None = None
) -> PhaseComparison:
    tol = tol or Tolerances()
    if not outputs_a or not outputs_b:
        return PhaseComparison(
            phase=phase, note="not compared: a run has no outputs for this phase"
        )
    pairs = list(zip(outputs_a, outputs_b))
    if [_prompt_text(a.get("prompt")) for a, _ in pairs] != [
        _prompt_text(b.get("prompt")) for _, b in pairs
    ] or len(outputs_a) != len(outputs_b):
        return PhaseComparison(phase=phase, note="not compared: the runs used different prompts")
    prompts = [compare_output(i, a, b, tol) for i, (a, b) in enumerate(pairs)]
    return PhaseComparison(
        phase=phase,
        prompts=prompts,
        garbage_a=garbage_checks(outputs_a, tol),
        garbage_b=garbage_checks(outputs_b, tol),
        aggregate=aggregate_judgement(prompts, outputs_a, outputs_b, tol),
    )
