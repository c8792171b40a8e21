"""Root-cause classification of a failed phase's log into a layer and a component.

The rules live in ``references/error-classification.md`` and ``references/multichip-errors.md``
(Markdown tables, parsed here); this module only knows how to *read* a log — strip vLLM's
prefixes, separate the processes, parse and unwrap tracebacks — and how to apply the rules.
Standard library only: it runs on the host and must import without vLLM.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import functools
import itertools
import json
import os
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import kernel_index
from .vocabulary import COMPONENT_LAYER
from .vocabulary import MULTICHIP as _MULTICHIP

__all__ = ["Diagnosis", "Rule", "RuleError", "load_rules", "classify_log", "cli_classify", "main"]

# --------------------------------------------------------------------------- vocabulary

MULTICHIP = frozenset(_MULTICHIP)
_CONFIDENCE = ("low", "medium", "high")
_ATOM_KINDS = ("exc", "msg", "frame", "inner", "code", "line", "text", "cond")
_RULE_HEADER = ["id", "component", "layer", "confidence", "match", "hint"]
_RULE_FILES = ("error-classification.md", "multichip-errors.md")

# Frame packages that "own" code, innermost first wins (triton/torch/stdlib are skipped).
_OWNER_PKG = {
    "flag_gems": "FlagGems",
    "vllm_fl": "plugin",
    "flagcx": "FlagCX",
    "vllm": "vllm",
    "transformers_modules": "model",
}
_KNOWN_PKG = frozenset(_OWNER_PKG) | {"triton", "torch", "transformers"}
_PLUGIN_PKG = re.compile(r"vllm_(?!fl$)[a-z]\w*")
_FLAGOS_PKG = ("flag_gems", "vllm_fl", "flagcx", "triton")
_OWNER_PATHS = (  # a component's source path written in the failure's own text
    (re.compile(r"flag_gems/"), "FlagGems"),
    (re.compile(r"vllm_fl/"), "plugin"),
    (re.compile(r"(?i)\bflagcx/"), "FlagCX"),
)
_OWNER_NAMES = (  # a component named in the failing line itself (weakest evidence)
    (re.compile(r"(?i)\bflag_?gems\b"), "FlagGems"),
    (re.compile(r"\bvllm_fl\b|vllm-plugin-FL"), "plugin"),
    (re.compile(r"(?i)\bflagcx\b"), "FlagCX"),
    (re.compile(r"(?i)\bflagtree\b"), "FlagTree"),
)
_OP_PATH = kernel_index.OP_PATH  # one rule for where an op's code lives

# --------------------------------------------------------------------------- public types


class RuleError(ValueError):
    """A rule table row in references/ is malformed (the message names file and line)."""


@dataclass(frozen=True)
class Atom:
    """One condition of a rule's match cell, e.g. ``!inner:/vllm_fl\\//``."""

    kind: str
    pattern: re.Pattern[str]
    negate: bool = False


@dataclass(frozen=True)
class Rule:
    """One row of a rule table in references/.

    Its match is one or more alternatives joined by ``or`` (one mechanism that shows in several
    forms: a watchdog's timeout line, or a stack dump waiting in the same library); ``atoms`` is
    all of their atoms together."""

    id: str
    component: str  # a component, "owner", "wrapper" or "benign"
    layer: int | None
    confidence: str
    atoms: tuple[Atom, ...]
    hint: str
    source: str  # "file.md:line"
    fallback: str | None = None  # for owner(...) / caller(...) rows
    caller: bool = (
        False  # caller(...): Triton's own frames are skipped (the kernel's owner is blamed)
    )
    alts: tuple[tuple[Atom, ...], ...] = ()  # the alternatives (one: ``(atoms,)``)

    def __post_init__(self) -> None:
        if not self.alts:
            object.__setattr__(self, "alts", (self.atoms,))

    @property
    def line_alts(self) -> tuple[tuple[Atom, ...], ...]:
        """The alternatives that can match a bare log line (only line:/text: atoms)."""
        return tuple(alt for alt in self.alts if all(a.kind in ("line", "text") for a in alt))

    @property
    def line_capable(self) -> bool:
        """True when the row can match a bare log line (an alternative of only line:/text: atoms)."""
        return bool(self.line_alts)

    @property
    def exception_capable(self) -> bool:
        return any(not any(a.kind == "line" for a in alt) for alt in self.alts)

    @property
    def conditional(self) -> bool:
        """True when the row needs a condition line (``cond:``) somewhere in the log."""
        return any(a.kind == "cond" for a in self.atoms)


@dataclass(frozen=True)
class Diagnosis:
    """What broke, where, and the lines that prove it."""

    component: str
    layer: int | None
    rule: str | None
    evidence: list[str]
    culprit_op: str | None
    hint: str
    confidence: str
    signature: str
    error: str | None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- rule loading

_ATOM_RE = re.compile(r"(!?)(\w+):/((?:\\.|[^/\\])*)/(i?)(?=\s|$)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _default_references() -> Path:
    from .resources import references_dir  # the shipped rule tables (one lookup, resources.py)

    return references_dir()


def load_rules(references_dir: Path | None = None) -> list[Rule]:
    """Parse the rule tables of both reference documents (cached per path and mtime)."""
    base = Path(references_dir) if references_dir is not None else _default_references()
    files = [base / name for name in _RULE_FILES]
    for f in files:
        if not f.is_file():
            raise RuleError(f"rule file {f} is missing: the classifier reads its rules from it")
    key = tuple((str(f.resolve()), f.stat().st_mtime_ns) for f in files)
    return list(_load_cached(key))


@functools.lru_cache(maxsize=8)
def _load_cached(key: tuple[tuple[str, int], ...]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path_str, _ in key:
        path = Path(path_str)
        for rule in _parse_file(path):
            if rule.id in seen:
                raise RuleError(
                    f"{rule.source}: rule id {rule.id!r} already defined at {seen[rule.id]}"
                )
            seen[rule.id] = rule.source
            rules.append(rule)
    if not rules:
        raise RuleError(f"no rule tables found in {', '.join(p for p, _ in key)}")
    return tuple(rules)


def _split_cells(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(body)]


_SEPARATOR = re.compile(r"\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?")


_ROLE = re.compile(r"(?:owner|caller|wrapper)\(\w+\)|wrapper|benign|" + "|".join(COMPONENT_LAYER))


def _header_like(cells: list[str]) -> bool:
    """A table header close enough to the rule header that it was meant to be one (drifted)."""
    names = [c.lower().strip("` *") for c in cells]
    close = sum(
        1 for c in names if c and difflib.get_close_matches(c, _RULE_HEADER, n=1, cutoff=0.6)
    )
    return close >= 3 or (bool(names) and names[0] in ("id", "rule", "rule id"))


def _parse_file(path: Path) -> Iterator[Rule]:
    """Yield the rows of every rule table; anything that would make a row vanish is an error.

    A rule table is found by its header. A header that drifted from the rule header (a renamed
    or misspelt column, one column too many) would silently turn its rows into prose, so a table
    header that resembles it is an error; so is a rule table without rows and a row that does not
    start with '|' (it would end the table and drop the rows after it).
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    in_table = False
    rows = 0
    header_at = 0
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        where = f"{path.name}:{lineno}"
        if not stripped.startswith("|"):
            if in_table and "|" in stripped:
                raise RuleError(
                    f"{where}: a rule table row must start with '|'; as written it ends "
                    f"the table and the rows after it would be ignored"
                )
            if in_table and rows == 0:
                raise RuleError(f"{path.name}:{header_at}: rule table without rows")
            in_table = False
            continue
        cells = _split_cells(stripped)
        nxt = lines[lineno].strip() if lineno < len(lines) else ""
        if [c.lower() for c in cells] == _RULE_HEADER:
            if not _SEPARATOR.fullmatch(nxt):
                raise RuleError(
                    f"{where}: a rule table header must be followed by a |---| separator line"
                )
            in_table, rows, header_at = True, 0, lineno
            continue
        if not in_table and _SEPARATOR.fullmatch(nxt) and _header_like(cells):
            raise RuleError(
                f"{where}: this looks like a rule table header but is not exactly "
                f"| {' | '.join(_RULE_HEADER)} |; its rows would be ignored"
            )
        if (
            not in_table
            and _SEPARATOR.fullmatch(stripped)
            and (lineno == 1 or not lines[lineno - 2].strip().startswith("|"))
        ):
            raise RuleError(
                f"{where}: a table without a header line; a rule table needs "
                f"| {' | '.join(_RULE_HEADER)} | above its separator"
            )
        if not in_table and len(cells) == len(_RULE_HEADER) and _ROLE.fullmatch(cells[1]):
            raise RuleError(
                f"{where}: this looks like a rule row outside a rule table (no "
                f"| {' | '.join(_RULE_HEADER)} | header above it); it would be ignored"
            )
        if not in_table or _SEPARATOR.fullmatch(stripped):
            continue
        rows += 1
        yield _parse_row(cells, where)
    if in_table and rows == 0:
        raise RuleError(f"{path.name}:{header_at}: rule table without rows")


def _parse_row(cells: list[str], where: str) -> Rule:
    if len(cells) != len(_RULE_HEADER):
        raise RuleError(
            f"{where}: rule row has {len(cells)} cells, expected {len(_RULE_HEADER)} "
            f"({' | '.join(_RULE_HEADER)}); escape a regex '|' as '\\|'"
        )
    rid, comp, layer_s, conf, match, hint = cells
    if not re.fullmatch(r"[A-Za-z][\w.-]*", rid):
        raise RuleError(f"{where}: bad rule id {rid!r}")
    fallback = None
    m = re.fullmatch(r"(owner|caller|wrapper)\((\w+)\)", comp)
    caller = bool(m) and m.group(1) == "caller"
    if m:
        fallback = m.group(2)
        if fallback != "unknown" and fallback not in COMPONENT_LAYER:
            raise RuleError(f"{where}: {m.group(1)} fallback {fallback!r} is not a component")
        comp = "wrapper" if m.group(1) == "wrapper" else "owner"
    elif comp not in COMPONENT_LAYER and comp not in ("wrapper", "benign"):
        raise RuleError(
            f"{where}: unknown component {comp!r}; use one of "
            f"{', '.join(COMPONENT_LAYER)}, owner(X), caller(X), wrapper, benign"
        )
    layer: int | None
    if comp in COMPONENT_LAYER:
        if layer_s != str(COMPONENT_LAYER[comp]):
            raise RuleError(
                f"{where}: component {comp} is layer {COMPONENT_LAYER[comp]}, row says {layer_s!r}"
            )
        layer = COMPONENT_LAYER[comp]
    else:
        if layer_s != "-":
            raise RuleError(f"{where}: layer must be '-' for {comp} rows, got {layer_s!r}")
        layer = None
    if conf not in _CONFIDENCE:
        raise RuleError(f"{where}: confidence must be one of {_CONFIDENCE}, got {conf!r}")
    if not hint:
        raise RuleError(f"{where}: empty hint")
    alts = _parse_match(match.strip().strip("`").strip(), where)
    atoms = tuple(a for alt in alts for a in alt)
    rule = Rule(rid, comp, layer, conf, atoms, hint, where, fallback, caller, alts)
    for alt in alts:
        kinds = {a.kind for a in alt}
        if "line" in kinds and not kinds <= {"line", "text"}:
            raise RuleError(f"{where}: line: atoms cannot be combined with exception atoms")
        if "cond" in kinds and (kinds & {"line", "text"} or comp not in COMPONENT_LAYER):
            raise RuleError(
                f"{where}: cond: atoms explain failures; they go with a component and exception atoms"
            )
        if all(a.negate for a in alt):
            raise RuleError(
                f"{where}: a match (each alternative of it) needs at least one positive atom"
            )
    if comp in ("benign", "wrapper") and len(alts) > 1:
        raise RuleError(f"{where}: {comp} rows take one alternative (no 'or')")
    for atom in atoms:
        if atom.kind == "cond" and (
            atom.negate
            or atom.pattern.flags & re.IGNORECASE
            or not _required_literals(atom.pattern.pattern, lower=False)
        ):
            raise RuleError(
                f"{where}: a cond: atom must be positive, case-sensitive and hold a literal of "
                f"3+ characters (it is looked for in every log line)"
            )
    if comp == "benign" and not all(a.kind in ("line", "text") for a in atoms):
        raise RuleError(f"{where}: benign rows may only use line:/text: atoms")
    return rule


def _parse_match(text: str, where: str) -> tuple[tuple[Atom, ...], ...]:
    """The alternatives of a match cell: atoms separated by spaces, alternatives by ``or``."""
    alts: list[tuple[Atom, ...]] = []
    atoms: list[Atom] = []
    pos = 0
    for m in _ATOM_RE.finditer(text):
        between = text[pos : m.start()].strip()
        if between == "or" and atoms:
            alts.append(tuple(atoms))
            atoms = []
        elif between:
            raise RuleError(f"{where}: cannot parse match near {text[pos : m.start()]!r}")
        pos = m.end()
        neg, kind, body, flag = m.groups()
        if kind not in _ATOM_KINDS:
            raise RuleError(f"{where}: unknown atom kind {kind!r}; use {', '.join(_ATOM_KINDS)}")
        if re.match(r"\(\?[aiLmsux]+\)", body):
            raise RuleError(
                f"{where}: inline global regex flags are not allowed; append 'i' after the closing '/'"
            )
        try:
            pat = re.compile(body, re.MULTILINE | (re.IGNORECASE if flag else 0))
        except re.error as exc:
            raise RuleError(f"{where}: bad regex /{body}/: {exc}") from None
        atoms.append(Atom(kind, pat, bool(neg)))
    if text[pos:].strip() or not atoms:
        raise RuleError(
            f"{where}: cannot parse match {text!r}; expected atoms like exc:/RE/ msg:/RE/ line:/RE/"
            f" (alternatives joined by 'or')"
        )
    return (*alts, tuple(atoms))


@dataclass(frozen=True)
class _RuleSet:
    """Rules split by role, with the line-rule prefilter precompiled."""

    benign_start: re.Pattern[str] | None  # benign branches anchored at the line start (``match``)
    benign_any: re.Pattern[str] | None  # the other benign branches (``search``)
    wrappers: tuple[Rule, ...]
    ordered: tuple[Rule, ...]  # fixed-component rows then owner rows
    line_rules: tuple[Rule, ...]
    line_alts: tuple[
        tuple[tuple[tuple[re.Pattern[str], bool], ...], ...], ...
    ]  # per line rule: its line
    # alternatives as (regex, negated) pairs (the exception alternatives never match a bare line)
    line_lits: tuple[re.Pattern[str] | None, ...]  # per line rule: one of these literals must occur
    # on the lower-cased line: can a line rule or a native failure match? Its literals are reduced
    # (none contains another), so at each position at most one starts: searching again from the
    # next position finds every occurrence of every one
    gate: re.Pattern[str] | None
    lit_rules: dict[str, frozenset[int]]  # gate literal -> indices of the line rules needing it
    cond_lits: tuple[str, ...]  # one of these occurs in every condition line (case-sensitive)
    conds: tuple[re.Pattern[str], ...]  # the cond: regexes


def _top_alternatives(pattern: str) -> list[str]:
    """The top-level ``|`` branches of a regex (escapes, groups and classes respected)."""
    out, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":
                i += 1  # "[]…]": a literal ']' first
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    return out + [pattern[start:]]


def _split_benign(
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
        for alt in _top_alternatives(pat.pattern):
            if alt.startswith("^"):
                anchored.append(f"(?{flag[2:3]}:{alt[1:]})" if flag else f"(?:{alt[1:]})")
            else:
                floating.append(f"(?{flag[2:3]}:{alt})" if flag else alt)
    return (
        re.compile("|".join(anchored)) if anchored else None,
        re.compile("|".join(floating)) if floating else None,
    )


def _combine(pats: Iterable[re.Pattern[str]]) -> re.Pattern[str] | None:
    parts = [f"(?{'i' if p.flags & re.IGNORECASE else ''}m:{p.pattern})" for p in pats]
    return re.compile("|".join(parts)) if parts else None


def _required_literals(pattern: str, lower: bool = True) -> set[str] | None:
    """Strings (lower-cased unless ``lower`` is false) one of which occurs in every match of
    ``pattern`` (None if unknown).

    Used only to skip the full regexes on lines that cannot match: a speed-up that never
    changes a result (a pattern we cannot analyse is always tried).
    """
    from re import _constants as C  # stdlib internals, guarded by the fallback
    from re import _parser as P

    try:
        tree = list(P.parse(pattern))
    except Exception:  # noqa: BLE001 - any surprise just disables the prefilter
        return None

    def seq(items) -> set[str] | None:
        cands: list[set[str]] = []
        run: list[str] = []

        def flush() -> None:
            if run:
                cands.append({"".join(run).lower() if lower else "".join(run)})
                run.clear()

        for op, av in items:
            if op is C.LITERAL:
                run.append(chr(av))
                continue
            if (
                op is C.IN
                and len(av) == 2
                and all(o is C.LITERAL for o, _ in av)
                and chr(av[0][1]).lower() == chr(av[1][1]).lower()
            ):
                if not lower:  # a case-sensitive literal cannot cover [Ee]
                    flush()
                    continue
                run.append(chr(av[0][1]))  # [Ee] → e
                continue
            flush()
            sub: set[str] | None = None
            if op is C.SUBPATTERN:
                sub = seq(av[-1])
            elif op is C.BRANCH:
                subs = [seq(b) for b in av[1]]
                sub = set().union(*subs) if all(subs) else None
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[0] >= 1:
                sub = seq(av[2])
            if sub:
                cands.append(sub)
        flush()
        return max(cands, key=lambda c: min(map(len, c))) if cands else None

    lits = seq(tree)
    lits = {x.strip() for x in lits} if lits else None  # a space is everywhere: a poor anchor
    return lits if lits and min(map(len, lits)) >= 3 else None


def _rule_literals(rule: Rule) -> tuple[str, ...] | None:
    """Literals one of which occurs in every line the row matches (None: unknown)."""
    out: set[str] = set()
    for alt in rule.line_alts:
        pos = next(
            (a for a in alt if not a.negate), None
        )  # one positive atom suffices: all must hold
        found = _required_literals(pos.pattern.pattern) if pos is not None else None
        if not found:
            return None
        out |= found
    return tuple(sorted(out)) if out else None


def _literal_index(per_rule: list[tuple[str, ...] | None]) -> dict:
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
        "gate": re.compile(_trie_regex(sorted(kept))),
        "lit_rules": {k: frozenset(v) for k, v in index.items()},
    }


def _trie_regex(words: list[str]) -> str:
    """An alternation of literals as a prefix trie, so the regex engine tries few branches."""
    if not words:
        return "(?!)"
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(w[:1], []).append(w[1:])
    alts = []
    for head, tails in sorted(groups.items()):
        if "" in tails:  # a shorter word is a prefix of the others: it alone suffices
            alts.append(re.escape(head))
        else:
            alts.append(
                re.escape(head) + _trie_regex(tails)
                if len(tails) > 1
                else re.escape(head + tails[0])
            )
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


@functools.lru_cache(maxsize=8)
def _ruleset(rules: tuple[Rule, ...]) -> _RuleSet:
    benign = [r for r in rules if r.component == "benign"]
    wrappers = tuple(r for r in rules if r.component == "wrapper")
    fixed = [r for r in rules if r.component in COMPONENT_LAYER]
    owner = [r for r in rules if r.component == "owner"]
    ordered = tuple(fixed + owner)
    line_rules = tuple(r for r in ordered if r.line_capable)
    line_lits = tuple(_rule_literals(r) for r in line_rules)
    conds = tuple(dict.fromkeys(a.pattern for r in ordered for a in r.atoms if a.kind == "cond"))
    return _RuleSet(
        **dict(
            zip(
                ("benign_start", "benign_any"),
                _split_benign(a.pattern for r in benign for a in r.atoms if not a.negate),
            )
        ),
        wrappers=wrappers,
        ordered=ordered,
        line_rules=line_rules,
        line_alts=tuple(
            tuple(tuple((a.pattern, a.negate) for a in alt) for alt in r.line_alts)
            for r in line_rules
        ),
        # benign lines are recognised before the gate, by their own regexes
        **_literal_index([*line_lits, _NATIVE_LITERALS]),
        line_lits=tuple(re.compile(_trie_regex(sorted(x))) if x else None for x in line_lits),
        cond_lits=tuple(
            sorted({lit for p in conds for lit in _required_literals(p.pattern, lower=False) or ()})
        ),
        conds=conds,
    )


# --------------------------------------------------------------------------- log reading

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """A log line without terminal colour and cursor codes (vLLM colours its prefixes)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


# Possessive quantifiers (`++`, `*+`) where backtracking can never help (the character class
# excludes what follows): the same matches, fewer steps on each of a big log's lines.
_PREFIX = re.compile(
    r"(?:[\w.]++-\d++\s++\|\s)?"  # docker compose "vllm-1  | "
    r"(?:\((?P<proc>[A-Za-z_][\w.-]*+)(?: (?:rank|tp|dp)=\d++)*+(?: pid=(?P<pid>\d++))?(?:, ip=[\w.:-]++)?\)\s++)?"  # (Worker_TP1 pid=123), Ray's (RayWorkerWrapper pid=1, ip=10.0.0.1)
    r"(?:(?P<lvl>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s++\d\d-\d\d\s++\d\d:\d\d:\d\d(?:\.\d++)?\s++\[?(?P<src>[^\]\s]*+)\]\s?"
    r"|\[?(?P<glog>[IWEF])\d{4}\s++\d\d:\d\d:\d\d\.\d++\s++(?:\d++\s++)?(?P<gsrc>[^\]\s]++)\]\s?"
    r"|\[(?P<blvl>DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\s)?"
)
# A prefix starts with "(" (process tag), "[" or a level letter, or is docker compose's
# "name-1  | ": a line that starts otherwise and has no "|" has none (the regex is skipped).
_PREFIX_FIRST = frozenset("([DIWECF")
_NO_PREFIX = _PREFIX.match("")
# The same as _PREFIX with an INFO/DEBUG level, and nothing else: when it matches, _PREFIX would
# call the line quiet too (a fast path for the bulk of a big log, never a different answer).
_QUIET_FAST = re.compile(
    r"(?:[\w.]++-\d++\s++\|\s)?"
    r"(?:\([A-Za-z_][\w.-]*+(?: (?:rank|tp|dp)=\d++)*+(?: pid=\d++)?(?:, ip=[\w.:-]++)?\)\s++)?"
    r"(?:INFO|DEBUG)\s++\d\d-\d\d\s++\d\d:\d\d:\d\d(?:\.\d++)?\s++\[?[^\]\s]*+\]"
)
# What a log collector or a paste puts in front of every line, before the program's own
# prefix: `docker logs -t` / `kubectl logs --timestamps` times, journald's "Nov 30 10:00:00 host
# unit[pid]: ", kubectl's "[pod/name/container] ", torchrun's "[rank0]:" / "[default0]:", and a
# Markdown quote ("> "). Looked for in the first lines of a log (_outer_prefix): when most carry
# one, it is taken off every line that has it.
_OUTER = re.compile(
    r"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s"
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.@/-]+(?:\[\d+\])?: "
    r"|\[pod/[^\]\s]+\] "
    r"|\[(?:rank|default)\d+\]:\s?"
    r"|>(?: |$))*"
)
_OUTER_HEAD = 64  # lines looked at


def _outer_prefix(lines: Iterator[str]) -> tuple[Iterator[str], re.Pattern[str] | None, str]:
    """The log's lines (none consumed), the outer prefix most of its first lines carry (or None),
    and the indentation all of them share (a pasted excerpt indented as a whole)."""
    head = list(itertools.islice(lines, _OUTER_HEAD))
    body = [_ANSI.sub("", ln).rstrip("\r\n") for ln in head]
    body = [ln for ln in body if ln.strip()]
    outer = None
    if body and sum(1 for ln in body if _OUTER.match(ln).end()) * 2 >= len(body):
        outer = _OUTER
        body = [ln[_OUTER.match(ln).end() :] for ln in body]
        body = [ln for ln in body if ln.strip()]
    indent = os.path.commonprefix([ln[: len(ln) - len(ln.lstrip())] for ln in body]) if body else ""
    out = itertools.chain(head, lines)
    width = _wrap_width([_ANSI.sub("", ln).rstrip("\r\n") for ln in head])
    return (_unwrap(out, width) if width else out), outer, indent


def _wrap_width(head: list[str]) -> int | None:
    """The width a terminal or a pager hard-wrapped the log at: a fifth of the lines (two at
    least) exactly that long, none longer, and most of them going on in a line that is no line
    of its own (no log prefix, no indent: a wrap cuts mid-text). Several workers printing the
    same longest line are followed by their own prefixed lines."""
    lines = [ln for ln in head if ln.strip()]
    lengths = [len(ln) for ln in lines]
    if not lengths:
        return None
    widest = max(lengths)
    if widest < 60 or lengths.count(widest) < max(2, len(lengths) // 5):
        return None
    goes_on = [
        not nxt[:1].isspace() and not _PREFIX.match(nxt).end() and not _FRAME.match(nxt)
        for ln, nxt in zip(lines, lines[1:])
        if len(ln) == widest
    ]
    # two such lines must both go on; more, two thirds of them (a cut at a space looks indented)
    need = len(goes_on) if len(goes_on) < 3 else (len(goes_on) * 2 + 2) // 3
    return widest if goes_on and sum(goes_on) >= need else None


def _unwrap(lines: Iterator[str], width: int) -> Iterator[str]:
    """Lines of a hard-wrapped log joined back: a line exactly `width` long goes on in the next."""
    part = ""
    for line in lines:
        text = line.rstrip("\r\n")
        if len(_ANSI.sub("", text)) == width:
            part += text
            continue
        yield part + line
        part = ""
    if part:
        yield part


# Python's exception-group traceback draws a gutter: "  + Exception Group Traceback …", "  | "
# before each line of the group and of each sub-exception, "+-+---- 1 ----" between them.
_GROUP_START = re.compile(r"\s*\+ Exception Group Traceback")
_GROUP_GUTTER = re.compile(
    r"\s*(?:\| ?|\+-[-+]*(?: (?:\d+|\.\.\.) -+)?$|\+ (?=Exception Group Traceback))"
)
_QUIET = frozenset({"INFO", "DEBUG", "I"})
_WARN = frozenset({"WARNING", "WARN", "W"})
_FRAME = re.compile(r'\s*File "(?P<path>[^"]+)"(?:, line (?P<ln>\d+))?(?:,? in (?P<fn>\S.*))?\s*$')
# A source location on a line of its own ("src/flag_gems/fused/x.py:308:56:", Dynamo's
# "vllm_fl/dispatch/policy.py:") is a frame: compiler diagnostics and pasted stacks print them.
_LOCATION = re.compile(r"\s*(?P<path>[^\s:\"'`]*/[^\s:\"'`]+\.py)(?:(?::\d+){1,2}:?|:)\s*$")
# A line that is an error report of its own: a compiler diagnostic ("file:3:7: error: …", MLIR's
# "error: failed to legalize …") or a tool's "error: …" line.
_DIAG = re.compile(r"(?:(?P<loc>[^\s:\"'`]+:\d+:\d+):\s*)?error: (?P<msg>\S.*)")
_BLOCK_EXC = re.compile(r"(?P<type>[A-Za-z_][\w.]*)(?::(?:\s(?P<msg>.*))?)?$")
_BARE_EXC = re.compile(
    r"(?<![\w.])(?P<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Fault))(?::\s+(?P<msg>\S.*)|$)"
    # a module-qualified exception named inside a sentence ("… raises torch.AcceleratorError，…")
    r"|(?<![\w.])(?P<qtype>(?:[a-z_]\w*\.)+[A-Z]\w*(?:Error|Exception))(?![\w.:(])"
)
_CONNECTOR = re.compile(
    r"(?:The above exception was the direct cause of the following exception"
    r"|During handling of the above exception, another exception occurred):"
)
# a traceback; a faulthandler dump's thread; a py-spy dump's thread (`py-spy dump --pid N`, what
# vLLM's docs ask for at a hang): the two dumps list the most recent call first
_TB_START = re.compile(
    r"Traceback \(most recent call last\):|(?:Current thread|Thread) 0x[0-9a-f]+ .*\(most recent call first\):"
    r'|Thread (?:0x[0-9a-fA-F]+|\d+) \((?:active|idle)[^)]*\)(?:: ".*")?$'
)
# a program saying it goes on another way; a traceback it prints right after is the exception it
# handled (logged with exc_info), not the failure
_FALLS_BACK = re.compile(r"\b(?:fall(?:s|ing)? ?back|fell back)\b", re.IGNORECASE)
# an exception line of its own: it ends the message before it rather than continuing it
_NEXT_EXC = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception): \S")
_PYSPY_FRAME = re.compile(r"\s+(?P<fn>[\w<>.]+) \((?P<path>[^()\s]+\.py):(?P<ln>\d+)\)\s*$")
# Native failures have no Python exception line; they get a type of their own so the rules can
# name them: FatalPythonError (faulthandler), FatalSignal (a signal killed the process),
# NativeAssertionError (a C/C++ `Assertion … failed`, LLVM `UNREACHABLE`), CppException
# (`terminate called after throwing an instance of 'T'`).
_NATIVE = re.compile(
    r"Fatal Python error: (?P<fatal>.+)"
    r"|(?P<assert>.*?\S+:\d+: .*\bAssertion [`'\u2018].*[`'\u2019] failed\.?.*)"
    r"|(?P<unreach>.*\bUNREACHABLE executed at \S+:\d+.*)"
    r"|\*\*\* (?P<sig>SIG[A-Z]+) .*received by PID.*"
    r"|(?:.*\s)?(?P<sig2>Segmentation fault|Bus error|Illegal instruction|Aborted|Floating point exception)"
    r"(?: \(core dumped\))?"
    r"|terminate called after throwing an instance of '(?P<cpp>[^']+)'.*"
    r"|!+ (?P<segv>Segfault) encountered !+"
    # a device runtime's error code (CUDA, HIP, MetaX MACA, Moore Threads MUSA, Cambricon CNRT)
    r"|.*?(?<![A-Za-z])(?P<dev>(?:cuda|hip|mc|musa|cnrt)Error[A-Z]\w*).*"
)
_NATIVE_LITERALS = (
    "fatal python error",
    "assertion",
    "unreachable executed",
    "received by pid",
    "segmentation fault",
    "segfault",
    "bus error",
    "illegal instruction",
    "aborted",
    "floating point exception",
    "terminate called",
    "cudaerror",
    "hiperror",
    "mcerror",
    "musaerror",
    "cnrterror",
)  # lower case, one occurs in each
_NATIVE_GATE = re.compile(
    r"Fatal Python|ssertion|UNREACHABLE|SIG[A-Z]|Segmentation|Segfault|Bus error"
    r"|Illegal instr|Aborted|Floating point exc|terminate called|cudaError|hipError|mcError|musaError|cnrtError"
)
_DOTTED_EXC = re.compile(r"(?P<type>(?:[a-z_]\w*\.)+[A-Z]\w*): (?P<msg>\S.*)")
# Can this line start anything in a process with nothing open? (a necessary condition, built from
# the very patterns _Scanner._boundary and _in_idle use; lines that fail it skip the state
# machine; an exception named anywhere and native failures are checked separately)
_IDLE_HEAD = re.compile(
    r"\s*(?:"
    + "|".join(
        re.sub(r"\(\?P<\w+>", "(?:", p.pattern)
        for p in (_TB_START, _CONNECTOR, _FRAME, _LOCATION, _DIAG, _DOTTED_EXC, _PYSPY_FRAME)
    )
    + r"|from user code:|[\^~]|\.\.\.)"
)
_STDLIB = re.compile(r"^<|/lib/python3\.\d+/(?!site-packages|dist-packages)")
_MAX_LINE = 4000
_COND_LINES = (
    20_000  # conditions of the run (cond: atoms) are printed at start-up: looked for there
)
_MAX_DETAIL = 6
_MAX_FRAMES = 64
_MAX_CHAIN = 6
_HEAD, _TAIL = 32, 256


@dataclass
class _Frame:
    path: str
    text: str  # the verbatim frame line, stripped
    code: str = ""  # the source line printed under it, stripped


@dataclass
class _Block:
    """One exception of a traceback chain (frames outermost → innermost)."""

    start: int
    src: str | None
    header: bool = False
    reverse: bool = False
    current: bool = False  # faulthandler's "Current thread" (the one that crashed)
    frames: deque = field(default_factory=lambda: deque(maxlen=_MAX_FRAMES))
    exc_type: str | None = None
    message: str = ""
    detail: list[str] = field(default_factory=list)
    line: str = ""
    junk: int = 0
    handled: bool = (
        False  # printed right after "…, falling back to …": the handled exception behind it
    )

    def ordered_frames(self) -> list[_Frame]:
        return list(reversed(self.frames)) if self.reverse else list(self.frames)


@dataclass
class _Failure:
    """A failure candidate: an exception chain, or one log line matched by a line rule."""

    index: int
    stream: str
    blocks: list[_Block] = field(default_factory=list)
    line_rule: Rule | None = None
    line: str = ""
    orphan_frames: list[_Frame] = field(default_factory=list)
    context: str = (
        ""  # the line before a line-rule failure (compiler diagnostics name the file there)
    )
    dump: str = ""  # orphan frames came from a stack dump: "current" or "thread"
    user_frames: list[_Frame] = field(default_factory=list)  # Dynamo's "from user code:" frames


class _Phase(enum.IntEnum):
    """Where a process's output is in a traceback."""

    IDLE = 0  # nothing open
    FRAMES = 1  # in a traceback or stack dump, reading frames
    EXC = 2  # after an exception line, reading its continuation lines
    AFTER = 3  # an exception ended; a chain connector may follow
    CONNECTOR = 4  # after "The above exception was the direct cause…"


@dataclass
class _Stream:
    key: str
    phase: _Phase = _Phase.IDLE
    block: _Block | None = None
    chain: list[_Block] = field(default_factory=list)
    last_failure: _Failure | None = None
    handled: bool = False  # the next block was raised while handling the chain so far
    prev: str = ""  # the previous non-INFO message of this process
    prev_at: int = 0  # its line number
    user_code: _Failure | None = None  # the failure a "from user code:" section belongs to


class _Scanner:
    """Streams a log line by line with bounded memory and collects failure candidates."""

    def __init__(self, rs: _RuleSet) -> None:
        self.rs = rs
        self.streams: dict[str, _Stream] = {}
        self.head: list[_Failure] = []
        self.tail: deque[_Failure] = deque(maxlen=_TAIL)
        self.handled: list[_Failure] = []  # tracebacks behind a "falling back" line (not failures)
        self.index = 0
        self.emitted = 0
        self.warning_line = False
        self.gated = True  # the current line holds a literal some line/benign/native rule needs
        self.active: set[str] = set()  # streams inside a traceback
        self.boring: dict[str, None] = {}
        self.conditions: list[str] = []  # lines that matched a cond: atom (a condition of the run)
        self._handlers = {
            _Phase.IDLE: self._in_idle,
            _Phase.FRAMES: self._in_frames,
            _Phase.EXC: self._in_exc,
            _Phase.AFTER: self._in_after,
            _Phase.CONNECTOR: self._in_connector,
        }

    # -- input
    def feed(self, raw: str, stream: str | None = None) -> None:
        self.feed_all((raw,), stream)

    def feed_all(self, lines: Iterable[str], stream: str | None = None) -> None:
        """Read lines (all of one stream when ``stream`` is given, else each line's process tag
        decides). The loop body runs once per log line of a 100 MB log: names are bound locally."""
        rs = self.rs
        quiet_fast, prefix, boring = _QUIET_FAST.match, _PREFIX.match, self.boring
        prefix_first, no_prefix = _PREFIX_FIRST, _NO_PREFIX
        gate = rs.gate.search if rs.gate is not None else None
        benign_start = rs.benign_start.match if rs.benign_start is not None else _never
        benign_any = rs.benign_any.search if rs.benign_any is not None else _never
        fixed = stream
        cond_lits = rs.cond_lits
        lines, outer, indent = _outer_prefix(iter(lines))
        outer_match = outer.match if outer is not None else None
        in_group = False
        idle_phase, active, streams, idle_head = (
            _Phase.IDLE,
            self.active,
            self.streams,
            _IDLE_HEAD.match,
        )
        for raw in lines:
            self.index += 1
            if len(raw) > _MAX_LINE:
                raw = raw[:_MAX_LINE]
            if "\x1b" in raw:
                raw = _ANSI.sub("", raw)
            if outer_match is not None:
                raw = raw[outer_match(raw).end() :]
            if indent and raw.startswith(indent):
                raw = raw[len(indent) :]
            if cond_lits and self.index <= _COND_LINES:  # a condition of the run, at any level
                for lit in cond_lits:
                    if lit in raw:
                        self._condition(raw)
                        break
            # the bulk of a big log: INFO lines outside any traceback (the substring test only
            # spares the regex on the other lines; the full prefix parse below decides the rest)
            if not self.active and ("INFO" in raw or "DEBUG" in raw) and quiet_fast(raw):
                continue
            raw = raw.rstrip("\r\n")
            m = prefix(raw) if raw[:1] in prefix_first or "|" in raw else no_prefix
            lvl, glog, blvl = m.group("lvl", "glog", "blvl")
            level = lvl or glog or blvl
            stream = fixed
            if level in _QUIET:  # nothing to do unless it ends a traceback
                if self.active:
                    if stream is None:
                        proc, pid = m.group("proc", "pid")
                        stream = f"{proc} {pid or ''}" if proc else ""
                    st = self.streams.get(stream)
                    if st is not None and st.phase is not _Phase.IDLE:
                        self._flush(st)
                continue
            msg = raw[m.end() :]
            if in_group or "Exception Group" in msg:  # an exception group's gutter comes off
                in_group = in_group or _GROUP_START.match(msg) is not None
                gm = _GROUP_GUTTER.match(msg) if in_group else None
                if gm is not None:
                    msg = msg[gm.end() :]
                else:
                    in_group = False
            if not self.active and msg in boring:  # a repeated harmless line, nothing open
                continue
            if msg and (benign_start(msg) or benign_any(msg)):
                self._remember(msg)
                continue
            low = msg.lower()
            gated = gate is None or gate(low) is not None
            # a warning that names an exception in passing ("… errors like `OSError: …`") is
            # advice, not a failure; an exception line of its own still counts
            self.warning_line = level in _WARN
            if stream is None:
                proc, pid = m.group("proc", "pid")
                stream = f"{proc} {pid or ''}" if proc else ""
            st = streams.get(stream)
            if st is None:
                st = self._new_stream(stream)
            idle = st.phase is idle_phase
            if idle and msg in boring:
                st.prev, st.prev_at = msg, self.index
                continue
            events = self.emitted
            self.gated = gated
            if (
                idle
                and not gated
                and "Error" not in msg
                and "Exception" not in msg
                and "Fault" not in msg
                and not idle_head(msg)
            ):
                consumed = False  # nothing can start here (see _IDLE_HEAD)
            else:
                consumed = self._step(st, msg, m.group("src") or m.group("gsrc"), stream)
            if not consumed:
                if gated:
                    self._line_rules(st, msg.strip(), stream, low.strip())
                if idle and st.phase is idle_phase and events == self.emitted:
                    if len(boring) >= 8192:  # _remember, inline: once per log line
                        boring.clear()
                    boring[msg] = None
            st.prev, st.prev_at = msg, self.index
            if st.phase is idle_phase:  # _track, inline
                active.discard(st.key)
            else:
                active.add(st.key)

    def _condition(self, raw: str) -> None:
        if len(self.conditions) < 16 and any(p.search(raw) for p in self.rs.conds):
            line = raw.rstrip("\r\n")
            self.conditions.append(line[_PREFIX.match(line).end() :].strip())

    def _remember(self, msg: str) -> None:
        """Cache a message that does nothing in an idle stream (logs repeat the same warnings)."""
        if len(self.boring) >= 8192:
            self.boring.clear()
        self.boring[msg] = None

    def _track(self, st: _Stream) -> None:
        if st.phase is _Phase.IDLE:
            self.active.discard(st.key)
        else:
            self.active.add(st.key)

    def close(self) -> list[_Failure]:
        for st in self.streams.values():
            self._flush(st)
        out = self.head + list(self.tail)
        out.sort(key=lambda f: f.index)
        return out

    # -- internals
    def _new_stream(self, key: str) -> _Stream:
        if len(self.streams) >= 512:
            old = next(iter(self.streams))
            self._flush(self.streams.pop(old))
        st = self.streams[key] = _Stream(key)
        return st

    def _emit(self, st: _Stream, f: _Failure) -> None:
        (self.head if len(self.head) < _HEAD else self.tail).append(f)
        st.last_failure = f
        self.emitted += 1

    def _line_rules(self, st: _Stream, text: str, stream: str, low: str) -> None:
        rs = self.rs
        if not text or not rs.line_rules:
            return
        if rs.gate is not None:
            found: set[str] = set()
            m = rs.gate.search(low)
            while m is not None:
                found.add(m.group())
                m = rs.gate.search(low, m.start() + 1)
            if not found:
                return
            maybe = frozenset().union(*(rs.lit_rules[f] for f in found))
        else:
            maybe = None
        for i, (rule, lits, alts) in enumerate(zip(rs.line_rules, rs.line_lits, rs.line_alts)):
            if maybe is not None and i not in maybe:
                continue
            if maybe is None and lits is not None and not lits.search(low):
                continue
            # _atoms_hold on the line alternatives, inline (a big log's warning lines come here)
            if any(all((pat.search(text) is None) is neg for pat, neg in alt) for alt in alts):
                self._emit(
                    st,
                    _Failure(
                        self.index,
                        stream,
                        line_rule=rule,
                        line=text,
                        context=st.prev.strip()[:1000],
                    ),
                )
                return

    def _finish_chain(self, st: _Stream, stream: str) -> None:
        if st.chain and st.chain[0].handled:
            if len(self.handled) < _HEAD:  # only if nothing else explains a failed phase
                self.handled.append(_Failure(st.chain[0].start, stream, blocks=st.chain))
        elif st.chain:
            self._emit(st, _Failure(st.chain[0].start, stream, blocks=st.chain))
        st.chain = []
        st.block = None
        st.phase = _Phase.IDLE

    def _close_block(self, st: _Stream) -> None:
        blk = st.block
        st.block = None
        if blk is None:
            return
        if blk.exc_type is None:  # frames with no exception line
            frames = blk.ordered_frames()
            if st.user_code is not None and frames:
                # torch.compile's "from user code:": the code Dynamo was tracing — who owns it
                st.user_code.user_frames = frames
                st.user_code = None
                return
            lf = st.last_failure
            recent = (
                lf is not None
                and self.index - lf.index < 200
                and not any(b.frames for b in lf.blocks)
            )
            if (
                recent
                and frames
                and (not lf.orphan_frames or (blk.current and lf.dump == "thread"))
            ):
                # the stack of a frameless failure (a fatal error's thread dump, pasted frames)
                lf.orphan_frames = frames
                lf.dump = "current" if blk.current else ("thread" if blk.reverse else "")
                return
            if recent and lf.dump and blk.reverse:
                return  # the other threads of the same crash dump
            if not frames and not blk.header:
                return  # indented text, not a traceback
            # a traceback cut before its exception line, or a stack dump: a failure all the same,
            # attributed by its frames
            inner = next(
                (fr.text for fr in reversed(frames) if not _STDLIB.search(fr.path)),
                frames[-1].text if frames else "",
            )
            what = "stack dump" if blk.reverse else "traceback cut before its exception line"
            blk.exc_type = ""
            blk.message = f"{what}; innermost frame: {inner}" if inner else what
            blk.line = blk.message[:1000]
        if st.handled:
            # "During handling of the above exception": the earlier one was caught (a fallback
            # that failed, a translated error); the exception that propagated is the root.
            st.chain, st.handled = [], False
        if len(st.chain) < _MAX_CHAIN:
            st.chain.append(blk)

    def _flush(self, st: _Stream) -> None:
        self._close_block(st)
        self._finish_chain(st, st.key)
        self._track(st)

    # -- the per-process traceback state machine: one method per phase, each returns True when
    # it consumed the line (False: the line is left to the line rules)
    def _step(self, st: _Stream, msg: str, src: str | None, stream: str) -> bool:
        s = msg.strip()
        if self._boundary(st, s, src, stream):
            return True
        return self._handlers[st.phase](st, msg, s, src, stream)

    def _boundary(self, st: _Stream, s: str, src: str | None, stream: str) -> bool:
        """Lines that start a block in any phase: a traceback or dump header, Dynamo's
        "from user code:", a chain connector."""
        if _TB_START.match(s):
            if st.phase is not _Phase.CONNECTOR:
                self._close_block(st)
                self._finish_chain(st, stream)
            st.block = _Block(
                self.index,
                src,
                header=True,
                reverse="first" in s or not s.startswith("Traceback"),
                current=s.startswith("Current thread"),
                handled=st.phase is _Phase.IDLE
                and self.index - st.prev_at == 1
                and _FALLS_BACK.search(st.prev) is not None,
            )
            st.phase = _Phase.FRAMES
            return True
        if s == "from user code:" and st.phase is not _Phase.FRAMES:
            self._close_block(st)
            self._finish_chain(st, stream)
            lf = st.last_failure
            st.user_code = lf if lf and self.index - lf.index < 200 else None
            return True
        if _CONNECTOR.match(s):
            self._close_block(st)
            st.handled = s.startswith("During handling")
            st.phase = _Phase.CONNECTOR
            return True
        return False

    def _in_frames(self, st: _Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """Inside a traceback: frames, their code lines, then the exception line."""
        blk = st.block
        fm = (
            _FRAME.match(msg)
            or _LOCATION.match(msg)
            or (_PYSPY_FRAME.match(msg) if blk.reverse else None)
        )
        if fm:
            blk.frames.append(_Frame(fm.group("path"), s))
            return True
        dg = _DIAG.match(s)
        if dg:
            self._diagnostic(blk, dg, s, src)
            st.phase = _Phase.EXC
            return True
        if not s or s == "..." or s[0] in "^~" or (msg[0] in " \t" and blk.frames):
            if s and s[0] not in "^~" and s != "..." and not blk.frames[-1].code:
                blk.frames[-1].code = s[:500]  # the frame's source line (rules read it: code:)
            return True  # code lines (only a frame has them), position markers, elisions
        em = _BLOCK_EXC.match(msg)
        if em and _looks_like_type(em.group("type")):
            self._set_exc(blk, em.group("type"), em.group("msg") or "", s, src)
            st.phase = _Phase.EXC
            return True
        blk.junk += 1
        if blk.header and blk.frames and blk.junk <= 30:
            return False  # interleaved output inside a real traceback
        self._close_block(st)
        self._finish_chain(st, stream)
        return self._in_idle(st, msg, s, src, stream)

    def _in_exc(self, st: _Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """After an exception line: its continuation lines (same source), up to a few."""
        blk = st.block
        if (
            s
            and s != "..."
            and src == blk.src
            and len(blk.detail) < _MAX_DETAIL
            and not _FRAME.match(msg)
            and not msg.startswith("--")
            and not _NEXT_EXC.match(s)
        ):
            blk.detail.append(s[:1000])
            return True
        self._close_block(st)
        st.phase = _Phase.AFTER
        return self._in_after(st, msg, s, src, stream)

    def _in_after(self, st: _Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """A chain whose last exception ended: a connector may still follow; anything else ends it."""
        if not s:
            return False
        self._finish_chain(st, stream)
        return self._in_idle(st, msg, s, src, stream)

    def _in_connector(self, st: _Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """After "The above exception was the direct cause…": the next block's frames."""
        if not s:
            return True
        if _FRAME.match(msg) or msg[:1] in (" ", "\t"):
            st.block = _Block(self.index, src)
            st.phase = _Phase.FRAMES
            return self._in_frames(st, msg, s, src, stream)
        self._finish_chain(st, stream)
        return self._in_idle(st, msg, s, src, stream)

    def _in_idle(self, st: _Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """Nothing open: does this line start a failure (a headerless traceback, a native
        failure, a diagnostic, an exception line)?"""
        if not s:
            return False
        fm = _FRAME.match(msg) or _LOCATION.match(msg)
        if fm:  # a traceback without its header (cut log)
            st.block = _Block(self.index, src)
            st.block.frames.append(_Frame(fm.group("path"), s))
            st.phase = _Phase.FRAMES
            return True
        if msg[0] in " \t" and (s[0] in "^~" or s == "..."):
            return True  # code-position markers of a cut traceback
        if self.gated and _NATIVE_GATE.search(s):
            nm = _NATIVE.fullmatch(s)
            if nm:
                return self._open(st, *_native_exc(nm, s), s, src)
        dg = _DIAG.match(s) if "error: " in s else None
        if dg:
            st.block, st.phase = _Block(self.index, src), _Phase.EXC
            self._diagnostic(st.block, dg, s, src)
            return True
        dm = _DOTTED_EXC.match(s) if not self.warning_line else None
        if dm:
            return self._open(st, dm.group("type"), dm.group("msg"), s, src)
        em = _BARE_EXC.search(s) if ("Error" in s or "Exception" in s or "Fault" in s) else None
        if em and em.start() > 0 and self.warning_line:
            em = None
        if em:
            text = em.group("msg") or ""
            if em.group("qtype"):  # named inside a sentence: the sentence is its message
                text = s
            elif em.start() > 0 and s[em.start() - 1] in "`'\"":
                text = text.split(s[em.start() - 1], 1)[0]
            return self._open(st, em.group("type") or em.group("qtype"), text, s, src)
        return False

    def _open(self, st: _Stream, etype: str, message: str, line: str, src: str | None) -> bool:
        """Start a frameless failure block at this line (its continuation lines may follow)."""
        blk = _Block(self.index, src)
        self._set_exc(blk, etype, message, line, src)
        st.block, st.phase = blk, _Phase.EXC
        return True

    def _diagnostic(self, blk: _Block, dg: re.Match[str], line: str, src: str | None) -> None:
        if dg.group("loc"):
            blk.frames.append(_Frame(dg.group("loc").split(":", 1)[0], line))
        self._set_exc(blk, "DiagnosticError", dg.group("msg"), line, src)

    @staticmethod
    def _set_exc(blk: _Block, etype: str, message: str, line: str, src: str | None) -> None:
        blk.exc_type, blk.message, blk.line, blk.src = etype, message.strip(), line[:1000], src


def _native_exc(nm: re.Match[str], line: str) -> tuple[str, str]:
    """The type and message a native failure line gets (see _NATIVE)."""
    g = nm.groupdict()
    if g["fatal"]:
        return "FatalPythonError", g["fatal"]
    if g["assert"] or g["unreach"]:
        return "NativeAssertionError", line
    if g["cpp"]:
        return "CppException", g["cpp"]
    if g["dev"]:
        return "DeviceError", line
    return "FatalSignal", g["sig"] or g["sig2"] or "SIGSEGV"


def _never(_: str) -> None:
    return None


def _looks_like_type(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return bool(last) and (last[0].isupper() or last.endswith(("Error", "Exception")))


# --------------------------------------------------------------------------- classification


@dataclass
class _Exc:
    """The root exception of a failure, as the rules see it."""

    etype: str
    message: str
    detail: str
    line: str
    frames: list[_Frame]  # root block, outermost → innermost
    chain_frames: list[_Frame]
    evidence: list[str]


def _atoms_hold(rule: Rule, values) -> tuple[Atom, ...] | None:
    """The first alternative of the row whose atoms all hold (None: the row does not match)."""
    for alt in rule.alts:
        for atom in alt:
            vals = values(atom.kind)
            if atom.kind == "exc":
                hit = any(v and atom.pattern.fullmatch(v) for v in vals)
            else:
                hit = any(atom.pattern.search(v) for v in vals)
            if hit == atom.negate:
                break
        else:
            return alt
    return None


def _inner_path(frames: list[_Frame]) -> str | None:
    fr = _inner_frame(frames)
    return fr.path if fr else None


def _inner_frame(frames: list[_Frame]) -> _Frame | None:
    for fr in reversed(frames):
        if not _STDLIB.search(fr.path):
            return fr
    return None


def _exc_values(exc: _Exc, conditions: list[str] = ()):
    inner_frame = _inner_frame(exc.frames or exc.chain_frames)
    inner = inner_frame.path if inner_frame else None

    def values(kind: str) -> list[str]:
        if kind == "exc":
            return [exc.etype, exc.etype.rsplit(".", 1)[-1]] if exc.etype else []
        if kind in ("msg", "text"):
            return [exc.detail]
        if kind == "frame":
            return [f.path for f in exc.chain_frames]
        if kind == "inner":
            return [inner] if inner else []
        if kind == "code":
            return [inner_frame.code] if inner_frame and inner_frame.code else []
        if kind == "cond":
            return conditions
        return []

    return values


def _frame_pkg(path: str) -> str | None:
    parts = path.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            idx = len(parts) - 1 - parts[::-1].index(marker)
            return parts[idx + 1] if idx + 1 < len(parts) else None
    for p in parts[:-1]:
        if p in _KNOWN_PKG or _PLUGIN_PKG.fullmatch(p):
            return p
        if p.lower() == "flagcx":  # a FlagCX checkout ($FLAGCX_PATH, e.g. /workspace/FlagCX)
            return "flagcx"
    return None


def _pkg_owner(pkg: str | None) -> str | None:
    if not pkg:
        return None
    comp = _OWNER_PKG.get(pkg)
    if comp is None and _PLUGIN_PKG.fullmatch(pkg):
        return "plugin"  # vllm_ascend, vllm_gcu, vllm_omni…: an out-of-tree vLLM plugin
    return comp


# Triton's compiler, backends, native core, driver discovery and FlagTree's own `*_ext.py` vendor
# extensions (upstream Triton has none) are FlagTree's code (it replaces the `triton` package); triton.language and the launch path (jit, autotuner) run the kernel's
# owner's code and are skipped like torch.
_TRITON_OWNED = re.compile(
    r"(?:^|/)triton/(?:compiler|backends|_C|spec|runtime/(?:driver|build|cache))(?:/|\.py|$)"
    r"|(?:^|/)triton/(?:[\w/]+/)?\w+_ext\.py$"
)  # FlagTree's vendor extensions


def _owner(
    frames: list[_Frame], text: str, line: str, caller: bool = False
) -> tuple[str | None, str, _Frame | None]:
    """Who owns the code the failure came through: (component, how, frame).

    ``caller``: the failure is the kernel's (its source, its launch, its fault on the device):
    a Triton kernel the failure's text names is blamed on whoever defines it (kernel_index) —
    a device fault's stack is often not where the kernel ran; else Triton's own frames are
    skipped so the code that called the kernel is blamed.
    """
    if caller:  # the kernel the failure names is the most direct evidence of whose kernel it was
        named = _kernel_named(text)
        if named:
            return named[1], "kernel", None
    for fr in reversed(frames):
        pkg = _frame_pkg(fr.path)
        comp = _pkg_owner(pkg)
        if pkg == "triton" and not caller and _TRITON_OWNED.search(fr.path.replace("\\", "/")):
            comp = "FlagTree"
        if comp:
            return comp, "frame", fr
    for pat, comp in _OWNER_PATHS:
        if pat.search(text):
            return comp, "path", None
    for pat, comp in _OWNER_NAMES:
        if pat.search(line):
            return comp, "name", None
    return None, "none", None


_IDENT = re.compile(r"[A-Za-z_]\w*_\w+")


def _kernel_named(text: str) -> tuple[str, str, str | None] | None:
    """The Triton kernel the failure's own text names, by who defines it: (kernel, component,
    op). None when no known kernel is named, or the names point at different components."""
    index = kernel_index.load()
    hits = {name: index[name] for name in _IDENT.findall(text) if name in index}
    if not hits or len({comp for comp, _ in hits.values()}) > 1:
        return None
    name, (comp, op) = next(iter(hits.items()))
    return name, comp, op


def _root_exc(f: _Failure, rs: _RuleSet) -> tuple[_Exc | None, list[str]]:
    """First non-wrapper exception of the chain (wrappers with an inner error unwrapped)."""
    chain_frames = (
        [fr for b in f.blocks for fr in b.ordered_frames()] or f.orphan_frames
    ) + f.user_frames
    wrapped: list[str] = []
    for blk in f.blocks:
        frames = (
            blk.ordered_frames() or (f.orphan_frames if blk is f.blocks[0] else [])
        ) + f.user_frames
        detail = "\n".join([blk.message, *blk.detail])
        exc = _Exc(
            blk.exc_type or "",
            blk.message,
            detail,
            blk.line,
            frames,
            chain_frames,
            [blk.line, *blk.detail[:2]],
        )
        wrapper = next(
            (w for w in rs.wrappers if _atoms_hold(w, _exc_values(exc)) is not None), None
        )
        if wrapper is None:
            return exc, wrapped
        wrapped.append(blk.line)
        inner = _wrapped_inner(wrapper, detail)
        if inner:
            em = re.match(
                r"(?P<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)):\s*(?P<msg>.*)", inner
            )
            etype, imsg = (em.group("type"), em.group("msg")) if em else ("", inner)
            rest = "\n".join(blk.detail)
            return _Exc(
                etype,
                imsg,
                "\n".join([imsg, rest]).strip(),
                blk.line,
                [],
                [],
                [blk.line, *blk.detail[:2]],
            ), wrapped
    return None, wrapped


def _wrapper_rules(f: _Failure, rs: _RuleSet) -> list[Rule]:
    """The wrapper rows the failure's exceptions matched."""
    out = []
    for blk in f.blocks:
        exc = _Exc(
            blk.exc_type or "",
            blk.message,
            "\n".join([blk.message, *blk.detail]),
            blk.line,
            blk.ordered_frames(),
            blk.ordered_frames(),
            [blk.line],
        )
        out += [w for w in rs.wrappers if _atoms_hold(w, _exc_values(exc)) is not None][:1]
    return out


def _wrapped_inner(wrapper: Rule, detail: str) -> str | None:
    for atom in wrapper.atoms:
        if atom.kind in ("msg", "text") and not atom.negate and "inner" in atom.pattern.groupindex:
            m = atom.pattern.search(detail)
            if m and m.group("inner"):
                return m.group("inner").strip()
    return None


@dataclass
class _Verdict:
    component: str
    rule: Rule | None
    confidence: str
    failure: _Failure
    exc: _Exc | None
    owner_frame: _Frame | None
    evidence: list[str]


def _lower(conf: str, cap: str) -> str:
    return _CONFIDENCE[min(_CONFIDENCE.index(conf), _CONFIDENCE.index(cap))]


def _apply(
    rule: Rule, frames: list[_Frame], text: str, line: str
) -> tuple[str, str, _Frame | None]:
    if rule.component != "owner":
        return rule.component, rule.confidence, None
    comp, how, fr = _owner(frames, text, line, rule.caller)
    if comp is None:
        return rule.fallback or "unknown", "low", None
    conf = {
        "frame": rule.confidence,
        "path": _lower(rule.confidence, "medium"),
        "kernel": _lower(rule.confidence, "medium"),
    }.get(how, "low")
    return comp, conf, fr


_REPORTS_TROUBLE = re.compile(r"\b(?:WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b")


def _judge(f: _Failure, rs: _RuleSet, conditions: list[str]) -> _Verdict | None:
    """Classify one failure candidate; None when it is only a wrapper."""
    if f.line_rule is not None:
        comp, conf, fr = _apply(f.line_rule, f.orphan_frames, f"{f.context}\n{f.line}", f.line)
        # the line before goes with it when it is the cause being reported (a FlagCX WARN line,
        # then its error-return trace) or the code the failure is in (owner rows)
        with_context = (
            f.context
            and comp != "unknown"
            and (f.line_rule.component == "owner" or _REPORTS_TROUBLE.search(f.context) is not None)
        )
        ev = [f.context, f.line] if with_context else [f.line]
        return _Verdict(comp, f.line_rule, conf, f, None, fr, ev)
    exc, wrapped = _root_exc(f, rs)
    if exc is None:
        return None
    values = _exc_values(exc, conditions)
    context = "\n".join([exc.detail, exc.line])
    for rule in rs.ordered:
        held = _atoms_hold(rule, values) if rule.exception_capable else None
        if held is not None:
            comp, conf, fr = _apply(rule, exc.frames or exc.chain_frames, context, exc.line)
            ev = list(exc.evidence)
            for atom in held:
                if atom.kind == "cond":  # the condition that explains the failure
                    ev += [c for c in conditions if atom.pattern.search(c)][:1]
            if fr is not None:
                ev.append(fr.text)
            elif rule.component != "owner" and any(a.kind in ("inner", "frame") for a in held):
                inner = _inner_path(exc.frames or exc.chain_frames)
                ev += [fr2.text for fr2 in exc.chain_frames if fr2.path == inner][:1]
            return _Verdict(comp, rule, conf, f, exc, fr, ev + wrapped[:1])
    return _Verdict("unknown", None, "low", f, exc, None, list(exc.evidence) + wrapped[:1])


# --------------------------------------------------------------------------- signature, op

_NORMALISERS = (
    (re.compile(r"\S*/(?:site|dist)-packages/"), ""),
    (re.compile(r"(?:/tmp|/var/tmp|/dev/shm)/[^\s'\",)]*"), "<tmp>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<ts>"),
    (re.compile(r"\b\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?"), "<ts>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:\.\d+)?"), "<ts>"),
    (re.compile(r"\bpid[= :]+\d+", re.I), "pid=<n>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "<addr>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{12,}\b"), "<id>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s*(?:[KMGTP]i?B|bytes)\b", re.I), "<size>"),
    (re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?(?![A-Za-z_])"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def _normalise(text: str) -> str:
    for pat, rep in _NORMALISERS:
        text = pat.sub(rep, text)
    return text.strip()[:300]


def _flagos_frame(frames: list[_Frame]) -> str | None:
    for fr in reversed(frames):
        path = fr.path.replace("\\", "/")
        for pkg in _FLAGOS_PKG:
            i = path.rfind(f"/{pkg}/")
            if i >= 0 or path.startswith(f"{pkg}/"):
                rel = path[i + 1 :] if i >= 0 else path
                fn = re.search(r"\bin (\S+)\s*$", fr.text)
                return rel + (f":{fn.group(1)}" if fn else "")
    return None


def _culprit(frames: list[_Frame], text: str, component: str) -> str | None:
    for fr in reversed(frames):
        m = _OP_PATH.search(fr.path.replace("\\", "/"))
        if m:
            return m.group(1)
    m = _OP_PATH.search(text)
    if m:
        return m.group(1)
    named = _kernel_named(text)  # a kernel named in the text: its op, if the blame is its owner's
    return named[2] if named and named[1] == component else None


# --------------------------------------------------------------------------- entry points


def _iter_lines(log: Path | str | Iterable[str]) -> Iterator[str]:
    if isinstance(log, (str, Path)):
        with open(log, encoding="utf-8", errors="replace") as fh:
            yield from fh
    else:
        yield from log


def _result_lines(result: dict) -> list[str]:
    lines: list[str] = []
    tb = result.get("traceback")
    if isinstance(tb, str) and tb.strip():
        lines += tb.splitlines()
    err = result.get("error")
    if isinstance(err, str) and err.strip():
        etype = result.get("error_type")
        first = err.strip().splitlines()[0]
        if (
            isinstance(etype, str)
            and etype
            and not first.startswith(etype.rsplit(".", 1)[-1])
            and not first.startswith(etype)
        ):
            err = f"{etype}: {err.strip()}"
        if not any(err.strip().splitlines()[0] in ln for ln in lines):
            lines += ["", *err.strip().splitlines()]
    return lines


_RESULT_STREAM = "<result>"


def classify_log(log: Path | Iterable[str], result: dict | None = None, rules=None) -> Diagnosis:
    """Diagnose one phase from its full log (streamed) and, optionally, its result JSON."""
    rs = _ruleset(tuple(rules) if rules is not None else tuple(load_rules()))
    status = str((result or {}).get("status", "")).upper()
    if status == "PASS":
        return Diagnosis("none", None, None, [], None, "The phase passed.", "high", "", None)
    scanner = _Scanner(rs)
    scanner.feed_all(_iter_lines(log))
    if result:
        scanner.feed_all(_result_lines(result), stream=_RESULT_STREAM)
    failures = scanner.close()

    verdicts: list[_Verdict] = []
    wrappers: list[str] = []
    said: list[
        Rule
    ] = []  # wrapper(X) rows hit: what the wrapper itself means when nothing else is found
    for f in failures:
        v = _judge(f, rs, scanner.conditions)
        if v is None:
            wrappers += [b.line for b in f.blocks[:1]]
            said += [w for w in _wrapper_rules(f, rs) if w.fallback]
        else:
            verdicts.append(v)
    err = (result or {}).get("error")
    # a phase's own exception anchors the diagnosis; a root cause the phase guessed from the
    # server's output ("error_from_log") does not: the whole log decides then
    anchor = (
        None
        if (result or {}).get("error_from_log")
        else _anchor(verdicts, err if isinstance(err, str) else "")
    )
    if anchor is not None:
        return _diagnosis(anchor)
    known = [v for v in verdicts if v.component in COMPONENT_LAYER]
    if known:
        # a failure with its exception line beats one whose traceback was cut; then the lowest
        # layer; then the earliest
        best = min(
            known,
            key=lambda v: (
                _is_cut(v),
                _dump_rank(v),
                COMPONENT_LAYER[v.component],
                v.failure.index,
                v.failure.line_rule is not None,
            ),
        )
        return _diagnosis(best)
    if verdicts:
        first = min(
            verdicts, key=lambda v: (_is_cut(v), v.failure.line_rule is not None, v.failure.index)
        )
        return _diagnosis(first)
    if said:
        w = said[0]
        return Diagnosis(
            w.fallback,
            COMPONENT_LAYER.get(w.fallback),
            w.id,
            wrappers[:3],
            None,
            w.hint,
            "low",
            _normalise(wrappers[0]),
            wrappers[0],
        )
    if wrappers:
        return Diagnosis(
            "unknown",
            None,
            None,
            wrappers[:3],
            None,
            "Only wrapper errors are in the log; the root cause was not captured "
            "(look at the child processes' output, rerun with VLLM_LOGGING_LEVEL=DEBUG).",
            "low",
            _normalise(wrappers[0]),
            wrappers[0],
        )
    if status and status != "PASS" and scanner.handled:
        # the phase failed and nothing else says why: the exception it said it fell back from
        # is the best lead there is
        handled = [v for v in (_judge(f, rs, scanner.conditions) for f in scanner.handled) if v]
        if handled:
            return _diagnosis(min(handled, key=lambda v: v.failure.index))
    if status and status != "PASS":
        err = str((result or {}).get("error") or f"phase status {status}")
        return Diagnosis(
            "unknown",
            None,
            None,
            [err],
            None,
            "The phase failed but its log shows no recognisable error.",
            "low",
            _normalise(err),
            err,
        )
    return Diagnosis("none", None, None, [], None, "No failure in the log.", "high", "", None)


def _is_cut(v: _Verdict) -> bool:
    """A traceback without its exception line, or a stack dump: weaker than a named exception."""
    return v.exc is not None and not v.exc.etype


def _dump_rank(v: _Verdict) -> int:
    """Among stack dumps (a hang), the process that waited in a multi-chip component's code is
    the cause; processes waiting in vLLM's code are usually waiting for it."""
    if v.exc is None or not v.exc.message.startswith("stack dump"):
        return 0
    return 0 if v.component in MULTICHIP else 1


def _anchor(verdicts: list[_Verdict], error: str) -> _Verdict | None:
    """The phase's own recorded exception, when it names the failure (not a wrapper, not a guess).

    It outranks lines in the log that merely look alarming (a plugin printing a "non-fatal" out
    of memory warning before raising ImportError failed with the ImportError). When the log holds
    the same exception with its frames, that copy is used (the frames attribute it).
    """
    recorded = [
        v
        for v in verdicts
        if v.failure.stream == _RESULT_STREAM and v.exc is not None and v.exc.etype
    ]
    if not recorded:
        return None
    # the exception the phase named in its `error` field (its traceback may end in our own
    # wrapper, e.g. the serve script's "server exited" while the error names vLLM's refusal)
    first = error.strip().splitlines()[0] if error.strip() else ""
    named = [v for v in recorded if first and v.exc.message and v.exc.message[:80] in first]
    rec = named[-1] if named else recorded[0]
    head = f"{rec.exc.etype.rsplit('.', 1)[-1]}: {rec.exc.message}"[:200]
    same = [
        v
        for v in verdicts
        if v.failure.stream != _RESULT_STREAM
        and v.exc is not None
        and v.exc.etype
        and f"{v.exc.etype.rsplit('.', 1)[-1]}: {v.exc.message}"[:200] == head
    ]
    for v in same + [rec]:
        if v.component in COMPONENT_LAYER:
            return v
    return None


def _diagnosis(v: _Verdict) -> Diagnosis:
    exc = v.exc
    if exc is not None:
        frames = exc.frames or exc.chain_frames
        text = "\n".join([exc.detail, exc.line])
        # the message with up to two continuation lines (pydantic puts the reason below)
        message = (
            " ".join(x.strip() for x in exc.detail.splitlines()[:3] if x.strip()) or exc.message
        )
        error = f"{exc.etype}: {message}" if exc.etype else message
        sig_head = f"{exc.etype.rsplit('.', 1)[-1]}: {exc.message}" if exc.etype else exc.message
    else:
        frames, text = v.failure.orphan_frames, "\n".join(v.evidence)
        error = sig_head = v.failure.line
    op = _culprit(frames, text, v.component)
    where = _flagos_frame(frames)
    signature = _normalise(sig_head) + (f" @ {_normalise(where)}" if where else "")
    comp = v.component
    if v.rule is None or comp == "unknown":
        hint = v.rule.hint if v.rule else "No rule explains this failure; read the evidence lines."
        hint = hint.replace("{owner}", "an unidentified component")
    else:
        hint = v.rule.hint.replace("{owner}", comp)
    hint = hint.replace("{op}", op or "the failing op")
    evidence: list[str] = []
    for line in v.evidence:
        if line and line not in evidence:
            evidence.append(line)
    return Diagnosis(
        comp,
        COMPONENT_LAYER.get(comp),
        v.rule.id if v.rule else None,
        evidence[:6],
        op,
        hint,
        v.confidence if comp != "unknown" else "low",
        signature,
        error,
    )


def _load_result(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def cli_classify(paths: list[str], as_json: bool) -> int:
    """Classify each file: a log, or a phase result JSON (its log taken from a "log" key if any).

    Prints one JSON object per file with --json, otherwise one short line. Exit code 0 when every
    file was read, 2 when a file is missing or the rules are malformed.
    """
    try:
        rules = load_rules()
    except RuleError as exc:
        print(f"classify: {exc}", file=sys.stderr)
        return 2
    code = 0
    for name in paths:
        path = Path(name)
        if not path.is_file():
            print(f"classify: {name} is not a readable file", file=sys.stderr)
            code = 2
            continue
        result = _load_result(path) if path.suffix == ".json" else None
        log: Path | list[str] = path
        if result is not None:
            log_ref = result.get("log") or result.get("log_file")
            log = Path(log_ref) if isinstance(log_ref, str) and Path(log_ref).is_file() else []
        try:
            diag = classify_log(log, result, rules)
        except OSError as exc:
            print(f"classify: cannot read {name}: {exc.strerror}", file=sys.stderr)
            code = 2
            continue
        if as_json:
            print(json.dumps({"file": name, **diag.to_dict()}, ensure_ascii=False))
        else:
            layer = "-" if diag.layer is None else diag.layer
            tail = f" — {diag.error}" if diag.error else ""
            print(
                f"{name}: {diag.component} (layer {layer}, rule {diag.rule or '-'}, "
                f"{diag.confidence}){tail}"
            )
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m modelverify_kernel.classify PATH... [--json]`` (same as the package CLI)."""
    parser = argparse.ArgumentParser(prog="classify", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="log files or phase result JSON files")
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    args = parser.parse_args(argv)
    return cli_classify(args.paths, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
