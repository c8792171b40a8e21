"""Step 7: compare Run A and Run B outputs — same prompts, greedy, top-k logprobs.

Greedy decoding makes the two runs' tokens comparable one by one. A difference alone is not a
bug: when the two best candidates are within kernel noise of each other, a different kernel
may pick the other one (a *near-tie flip*). It is a bug when the distribution itself moved
(*changed distribution*): the top tokens or their logprobs differ beyond the tolerance. vLLM's
own rule (each side's token in the other's top-k) is too lax on flat distributions, where every
top-k token is in the other's top-k; so both sides' gaps must be small, and the logprobs of the
tokens both sides list must agree.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Tolerances:
    """Thresholds in nats (natural-log probability), see README "Output comparison"."""

    tie: float = 0.02  # two candidates this close are a tie in one run
    logprob: float = 0.05  # the same token's logprob may move this much between runs
    repeat_fraction: float = 0.8  # one token over this share of an output is garbage
    min_tokens_for_repeat: int = 8
    min_tokens_for_same_output: int = 4


@dataclass
class PromptComparison:
    index: int
    prompt: str
    kind: str  # completion | chat
    exact_match: bool
    tokens_a: int
    tokens_b: int
    first_divergence: int | None = None
    max_logprob_diff_prefix: float | None = None  # over the common prefix
    judgement: str = "identical"  # identical | near_tie_flip | changed_distribution | logprob_drift | length
    detail: str = ""


@dataclass
class GarbageFinding:
    check: str  # empty | repetition | nonfinite | same_output
    index: int
    detail: str


@dataclass
class PhaseComparison:
    phase: str
    prompts: list[PromptComparison] = field(default_factory=list)
    garbage_a: list[GarbageFinding] = field(default_factory=list)
    garbage_b: list[GarbageFinding] = field(default_factory=list)
    note: str | None = None

    @property
    def diverged(self) -> list[PromptComparison]:
        return [p for p in self.prompts if p.judgement in ("changed_distribution", "logprob_drift")]

    @property
    def new_garbage(self) -> list[GarbageFinding]:
        """Garbage in Run B that Run A did not show for the same prompt and check."""
        seen = {(g.check, g.index) for g in self.garbage_a}
        return [g for g in self.garbage_b if (g.check, g.index) not in seen]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diverged"] = len(self.diverged)
        d["new_garbage"] = [asdict(g) for g in self.new_garbage]
        return d


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


def judge_divergence(pos_a: dict[str, Any], pos_b: dict[str, Any], tol: Tolerances) -> tuple[str, str]:
    """At the first differing position: near-tie flip, or changed distribution."""
    top_a, top_b = _top(pos_a), _top(pos_b)
    ta, tb = pos_a["token_id"], pos_b["token_id"]
    if tb not in top_a or ta not in top_b:
        return "changed_distribution", (
            f"token {tb} (Run B) is not in Run A's top-{len(top_a)} or token {ta} (Run A) not in Run B's")
    gap_a, gap_b = abs(top_a[ta] - top_a[tb]), abs(top_b[ta] - top_b[tb])
    common = top_a.keys() & top_b.keys()
    moved = max((abs(top_a[t] - top_b[t]) for t in common), default=math.inf)
    if gap_a <= tol.tie and gap_b <= tol.tie and moved <= tol.logprob:
        return "near_tie_flip", (
            f"tokens {ta}/{tb} tie within {max(gap_a, gap_b):.4f} nats in both runs; "
            f"shared top tokens moved at most {moved:.4f}")
    return "changed_distribution", (
        f"gap between tokens {ta}/{tb}: {gap_a:.4f} nats in Run A, {gap_b:.4f} in Run B; "
        f"shared top tokens moved up to {moved:.4f} (tolerances: tie {tol.tie}, logprob {tol.logprob})")


def compare_output(index: int, a: dict[str, Any], b: dict[str, Any], tol: Tolerances) -> PromptComparison:
    ids_a, ids_b = list(a.get("token_ids") or []), list(b.get("token_ids") or [])
    pc = PromptComparison(index=index, prompt=_prompt_text(a.get("prompt")), kind=a.get("kind", "completion"),
                          exact_match=ids_a == ids_b, tokens_a=len(ids_a), tokens_b=len(ids_b))
    lps_a, lps_b = a.get("logprobs") or [], b.get("logprobs") or []
    diffs = []
    for i, (ta, tb) in enumerate(zip(ids_a, ids_b)):
        if ta != tb:
            pc.first_divergence = i
            if i < len(lps_a) and i < len(lps_b):
                pc.judgement, pc.detail = judge_divergence(lps_a[i], lps_b[i], tol)
            else:
                pc.judgement, pc.detail = "changed_distribution", "tokens differ; no logprobs recorded"
            break
        if i < len(lps_a) and i < len(lps_b):
            diffs.append(abs(_num(lps_a[i].get("logprob")) - _num(lps_b[i].get("logprob"))))
    pc.max_logprob_diff_prefix = round(max(diffs), 6) if diffs else None
    if pc.first_divergence is None and len(ids_a) != len(ids_b):
        pc.first_divergence = min(len(ids_a), len(ids_b))
        pc.judgement, pc.detail = "length", "one run stopped earlier (end of sequence) on the same tokens"
    if pc.judgement in ("identical", "length") and diffs and (max(diffs) > tol.logprob or any(map(math.isnan, diffs))):
        pc.judgement = "logprob_drift"
        pc.detail = f"same tokens, but a chosen token's logprob moved {max(diffs):.4f} nats (> {tol.logprob})"
    return pc


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
            found.append(GarbageFinding("repetition", i, f"token {token} is {count} of {len(ids)} tokens"))
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


def compare_phase(phase: str, outputs_a: Sequence[dict], outputs_b: Sequence[dict],
                  tol: Tolerances = Tolerances()) -> PhaseComparison:
    pc = PhaseComparison(phase=phase)
    if not outputs_a or not outputs_b:
        pc.note = "not compared: a run has no outputs for this phase"
        return pc
    pairs = list(zip(outputs_a, outputs_b))
    if [_prompt_text(a.get("prompt")) for a, _ in pairs] != [_prompt_text(b.get("prompt")) for _, b in pairs] \
            or len(outputs_a) != len(outputs_b):
        pc.note = "not compared: the runs used different prompts"
        return pc
    pc.prompts = [compare_output(i, a, b, tol) for i, (a, b) in enumerate(pairs)]
    pc.garbage_a = garbage_checks(outputs_a, tol)
    pc.garbage_b = garbage_checks(outputs_b, tol)
    return pc


def compare_runs(outputs_a: dict[str, Sequence[dict]], outputs_b: dict[str, Sequence[dict]],
                 tol: Tolerances = Tolerances()) -> list[PhaseComparison]:
    """Offline with offline, serve with serve."""
    return [compare_phase(phase, outputs_a.get(phase) or [], outputs_b.get(phase) or [], tol)
            for phase in ("offline", "serve")]


def first_mismatch(comparisons: Iterable[PhaseComparison]) -> PromptComparison | None:
    for c in comparisons:
        if c.diverged:
            return c.diverged[0]
    return None
