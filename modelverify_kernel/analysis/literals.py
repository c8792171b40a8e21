"""Literal strings a regex cannot match without, read by a small reader of the regex syntax the
rule files use (no private ``re`` internals).

They drive the classifier's speed prefilter: a log line that holds none of a rule's required
literals is not tried against the rule's regexes. A pattern the reader does not understand gets
no literals (the rule is then tried on every line): a slower answer, never a different one.
``understood`` says whether the reader follows a pattern (a test checks every rule's).
"""

from __future__ import annotations

import re

_CLASS_ESCAPES = frozenset("dDwWsSbBAZ")  # \d, \b, ...: not a literal character
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_QUANTIFIER = re.compile(r"[?*+]|\{(?:\d+(?:,\d*)?|,\d+)\}")
_SCOPED_FLAGS = re.compile(r"\?([aiLmsux]*)(?:-[imsx]+)?:")
_OTHER = ("other",)  # any item that is no literal character: ".", "^", "\d", a class, a lookaround


class Unsupported(ValueError):
    """Regex syntax the reader does not follow (the pattern then gets no literals)."""


class _Reader:
    """Recursive descent over a regex into items: ("lit", c), ("pair", c) for ``[Ee]``,
    ("group", alternatives, case_insensitive), ("repeat", item, minimum), ("other",)."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def parse(self) -> list[list[tuple]]:
        alts = self.alternatives()
        if self.i != len(self.p):
            raise Unsupported(f"unbalanced ')' at {self.i}")
        return alts

    def alternatives(self) -> list[list[tuple]]:
        alts = [self.sequence()]
        while self.p.startswith("|", self.i):
            self.i += 1
            alts.append(self.sequence())
        return alts

    def sequence(self) -> list[tuple]:
        items: list[tuple] = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            item = self.atom()
            if item is not None:
                items.append(self.quantified(item))
        return items

    def quantified(self, item: tuple) -> tuple:
        m = _QUANTIFIER.match(self.p, self.i)
        if m is None:
            if self.p.startswith("{", self.i):
                raise Unsupported(f"a '{{' that is no quantifier at {self.i}")
            return item
        self.i = m.end()
        if self.p[self.i : self.i + 1] in ("?", "+"):  # lazy or possessive
            self.i += 1
        q = m.group()
        least = 1 if q == "+" else 0 if q in "?*" else int(q[1:-1].split(",")[0] or 0)
        return ("repeat", item, least)

    def atom(self) -> tuple | None:
        c = self.p[self.i]
        if c == "\\":
            return self.escape()
        if c == "[":
            return self.char_class()
        if c == "(":
            return self.group()
        if c in "*+?{":
            raise Unsupported(f"nothing to repeat at {self.i}")
        self.i += 1
        return _OTHER if c in ".^$" else ("lit", c)

    def escape(self) -> tuple:
        nxt = self.p[self.i + 1 : self.i + 2]
        self.i += 2
        if not nxt:
            raise Unsupported("a trailing backslash")
        if nxt in _CLASS_ESCAPES:
            return _OTHER
        if nxt in _CHAR_ESCAPES:
            return ("lit", _CHAR_ESCAPES[nxt])
        if nxt.isalnum():
            raise Unsupported(f"escape \\{nxt}")
        return ("lit", nxt)

    def char_class(self) -> tuple:
        j = self.i + 1
        j += self.p[j : j + 1] == "^"
        j += self.p[j : j + 1] == "]"  # "[]...]": a literal ']' first
        while j < len(self.p) and self.p[j] != "]":
            j += 2 if self.p[j] == "\\" else 1
        if j >= len(self.p):
            raise Unsupported("an unterminated character class")
        body, self.i = self.p[self.i + 1 : j], j + 1
        if len(body) == 2 and body.isalpha() and body[0] != body[1] and len(set(body.lower())) == 1:
            return ("pair", body[0])  # [Ee]
        return _OTHER

    def group(self) -> tuple | None:
        i, p, ci, look = self.i + 1, self.p, False, False
        if p.startswith("?", i):
            if p.startswith(("?:", "?>"), i):
                i += 2
            elif p.startswith("?P<", i):
                i = p.index(">", i) + 1
            elif p.startswith(("?=", "?!"), i) or p.startswith(("?<=", "?<!"), i):
                i, look = i + (2 if p[i + 1] in "=!" else 3), True
            elif p.startswith("?#", i):
                self.i = p.index(")", i) + 1
                return None
            elif (m := _SCOPED_FLAGS.match(p, i)) is not None:
                i, ci = m.end(), "i" in m.group(1)
            else:
                raise Unsupported(f"group syntax at {self.i}")
        self.i = i
        alts = self.alternatives()
        if not p.startswith(")", self.i):
            raise Unsupported("an unterminated group")
        self.i += 1
        return _OTHER if look else ("group", alts, ci)


def _sequence(items: list[tuple], lower: bool) -> set[str] | None:
    """Candidates of one sequence: the set of strings with the longest shortest member."""
    cands: list[set[str]] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            text = "".join(run)
            cands.append({text.lower() if lower else text})
            run.clear()

    for item in items:
        if item[0] == "lit" or (item[0] == "pair" and lower):
            run.append(item[1])  # [Ee] -> e (only when comparing lower-cased)
            continue
        flush()
        sub = None
        if item[0] == "group" and (lower or not item[2]):
            sub = _alternatives(item[1], lower)
        elif item[0] == "repeat" and item[2] >= 1:
            sub = _sequence([item[1]], lower)
        if sub:
            cands.append(sub)
    flush()
    return max(cands, key=lambda c: min(map(len, c))) if cands else None


def _alternatives(alts: list[list[tuple]], lower: bool) -> set[str] | None:
    subs = [_sequence(a, lower) for a in alts]
    if len(subs) == 1:
        return subs[0]
    return set().union(*subs) if all(subs) else None  # type: ignore[arg-type]


def required_literals(pattern: str, lower: bool = True) -> set[str] | None:
    """Strings (lower-cased unless ``lower`` is false) one of which occurs in every match of
    ``pattern``; None when unknown or shorter than 3 characters (a poor anchor)."""
    try:
        tree = _Reader(pattern).parse()
    except Unsupported:
        return None
    lits = _alternatives(tree, lower)
    lits = {x.strip() for x in lits} if lits else None  # a space is everywhere: a poor anchor
    return lits if lits and min(map(len, lits)) >= 3 else None


def understood(pattern: str) -> bool:
    """Whether the reader follows every construct of ``pattern``."""
    try:
        _Reader(pattern).parse()
    except Unsupported:
        return False
    return True


def top_alternatives(pattern: str) -> list[str]:
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


def trie_regex(words: list[str]) -> str:
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
        elif len(tails) > 1:
            alts.append(re.escape(head) + trie_regex(tails))
        else:
            alts.append(re.escape(head + tails[0]))
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
