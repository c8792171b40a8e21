"""The rules compiled for reading a big log fast: split by role, with a literal gate in front.

Most lines of a 100 MB log can match nothing; the gate (one regex over the required literals of
every line rule and native failure form) says which lines are worth the full regexes, and which
line rules each literal lets through. A speed-up only: it never changes a result.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..vocabulary import COMPONENT_LAYER
from .knowledge import Rule, Tables
from .literals import required_literals, top_alternatives, trie_regex
from .logformat import native_patterns
from .matchers import Matcher


@dataclass(frozen=True)
class RuleSet:
    """Rules split by role, with the line-rule prefilter precompiled."""

    benign_start: re.Pattern[str] | None  # benign branches anchored at the line start (``match``)
    benign_any: re.Pattern[str] | None  # the other benign branches (``search``)
    wrappers: tuple[Rule, ...]
    ordered: tuple[Rule, ...]  # fixed-component rows then owner rows
    line_rules: tuple[Rule, ...]
    # per line rule: its alternatives that can match a bare line (only line:/text: atoms)
    line_alts: tuple[tuple[tuple[Matcher, ...], ...], ...]
    line_lits: tuple[re.Pattern[str] | None, ...]  # per line rule: one of these literals must occur
    # on the lower-cased line: can a line rule or a native failure match? Its literals are reduced
    # (none contains another), so at each position at most one starts: searching again from the
    # next position finds every occurrence of every one
    gate: re.Pattern[str] | None
    lit_rules: dict[str, frozenset[int]]  # gate literal -> indices of the line rules needing it
    cond_lits: tuple[str, ...]  # one of these occurs in every condition line (case-sensitive)
    conds: tuple[re.Pattern[str], ...]  # the cond: regexes
    native: re.Pattern[str]  # a native failure line (full match; see logformat.native_patterns)
    native_gate: re.Pattern[str]  # searched before ``native`` is tried
    falls_back: tuple[re.Pattern[str], ...]  # a line announcing a fallback
    tables: Tables


def split_benign(
    pats: Iterable[re.Pattern[str]],
) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """The benign patterns as (branches anchored at the line start, used with ``match``; the
    other branches, used with ``search``). A log line has no newline, so a ``^`` branch can only
    match at position 0: matching it there, instead of trying ``^`` at every position of a
    multi-line search, gives the same answer several times faster (one check per log line)."""
    anchored: list[str] = []
    floating: list[str] = []
    for pat in pats:
        flag = "(?i)" if pat.flags & re.IGNORECASE else ""
        for alt in top_alternatives(pat.pattern):
            if alt.startswith("^"):
                anchored.append(f"(?{flag[2:3]}:{alt[1:]})" if flag else f"(?:{alt[1:]})")
            else:
                floating.append(f"(?{flag[2:3]}:{alt})" if flag else alt)
    return (
        re.compile("|".join(anchored)) if anchored else None,
        re.compile("|".join(floating)) if floating else None,
    )


def rule_literals(rule: Rule) -> tuple[str, ...] | None:
    """Literals one of which occurs in every line the row matches (None: unknown)."""
    out: set[str] = set()
    for alt in rule.line_alts:
        # one positive atom suffices: all must hold
        pos = next((a for a in alt if not a.negate), None)
        found = required_literals(pos.pattern.pattern) if pos is not None else None
        if not found:
            return None
        out |= found
    return tuple(sorted(out)) if out else None


def literal_index(per_rule: list[tuple[str, ...] | None]) -> dict:
    """The gate: one regex of the reduced literals of all line rules (and native failures), and
    which line rules each literal lets through (the i-th entry of ``per_rule`` is line rule i).
    A rule whose literals are unknown disables the gate: every line is tried."""
    if any(found is None for found in per_rule) or not per_rule:
        return {"gate": None, "lit_rules": {}}
    lits: set[str] = set().union(*per_rule)  # type: ignore[arg-type]
    kept = {x for x in lits if not any(y != x and y in x for y in lits)}
    index: dict[str, set[int]] = {k: set() for k in kept}
    for i, found in enumerate(per_rule):
        for lit in found or ():
            for k in kept:
                if k in lit:  # the rule's literal occurs only where this kept one does
                    index[k].add(i)
    return {
        "gate": re.compile(trie_regex(sorted(kept))),
        "lit_rules": {k: frozenset(v) for k, v in index.items()},
    }


@functools.lru_cache(maxsize=8)
def build(rules: tuple[Rule, ...], tables: Tables) -> RuleSet:
    """The rule set of these rules and tables (cached: a log classified twice builds it once)."""
    benign = [r for r in rules if r.component == "benign"]
    ordered = tuple(
        [r for r in rules if r.component in COMPONENT_LAYER]
        + [r for r in rules if r.component == "owner"]
    )
    line_rules = tuple(r for r in ordered if r.line_capable)
    line_lits = tuple(rule_literals(r) for r in line_rules)
    conds = tuple(dict.fromkeys(a.pattern for r in ordered for a in r.atoms if a.kind == "cond"))
    native, native_lits, native_gate = native_patterns(tables.device_prefixes)
    benign_start, benign_any = split_benign(
        a.pattern for r in benign for a in r.atoms if not a.negate
    )
    return RuleSet(
        benign_start=benign_start,
        benign_any=benign_any,
        wrappers=tuple(r for r in rules if r.component == "wrapper"),
        ordered=ordered,
        line_rules=line_rules,
        line_alts=tuple(r.line_alts for r in line_rules),
        # benign lines are recognised before the gate, by their own regexes
        **literal_index([*line_lits, native_lits]),
        line_lits=tuple(re.compile(trie_regex(sorted(x))) if x else None for x in line_lits),
        cond_lits=tuple(
            sorted({lit for p in conds for lit in required_literals(p.pattern, lower=False) or ()})
        ),
        conds=conds,
        native=native,
        native_gate=native_gate,
        falls_back=tables.falls_back,
        tables=tables,
    )
