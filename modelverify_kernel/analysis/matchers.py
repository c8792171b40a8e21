"""The match kinds of a rule's match cell: one small class per kind, registered by name.

A rule's atom ``kind:/RE/`` becomes an instance of the class registered for ``kind``; the
rule-table parser looks kinds up in ``MATCHERS`` and knows no kind itself. A matcher is asked
``matches(values)`` with the strings its kind looks at (the root exception's type, its message,
frame paths, log lines...); which strings those are is the reader's business (diagnose.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

MATCHERS: dict[str, type[Matcher]] = {}


def register(cls: type[Matcher]) -> type[Matcher]:
    """Make a matcher class the one for its ``kind`` (a rule's ``kind:/RE/`` atom)."""
    MATCHERS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Matcher:
    """One condition of a rule's match cell, e.g. ``!inner:/vllm_fl\\//``: true when the regex is
    found in one of the values (negated: in none of them)."""

    pattern: re.Pattern[str]
    negate: bool = False
    kind: ClassVar[str] = ""
    on_lines: ClassVar[bool] = False  # also tried on bare log lines (a line rule)
    only_lines: ClassVar[bool] = False  # tried on bare log lines only, never on exceptions

    def matches(self, values: Iterable[str]) -> bool:
        """Whether the regex is found in one of the values (before negation)."""
        search = self.pattern.search
        return any(search(v) for v in values)

    def holds(self, values: Iterable[str]) -> bool:
        """The atom's verdict: ``matches`` with the negation applied."""
        return self.matches(values) != self.negate


@register
@dataclass(frozen=True)
class ExcMatcher(Matcher):
    """``exc:`` the root exception's type, full dotted name or last part, full match."""

    kind: ClassVar[str] = "exc"

    def matches(self, values: Iterable[str]) -> bool:
        full = self.pattern.fullmatch
        return any(v and full(v) for v in values)


@register
@dataclass(frozen=True)
class MsgMatcher(Matcher):
    """``msg:`` searched in the root exception's message (with its continuation lines)."""

    kind: ClassVar[str] = "msg"


@register
@dataclass(frozen=True)
class FrameMatcher(Matcher):
    """``frame:`` searched in every frame path the failure came through."""

    kind: ClassVar[str] = "frame"


@register
@dataclass(frozen=True)
class InnerMatcher(Matcher):
    """``inner:`` searched in the innermost frame path (standard-library frames skipped)."""

    kind: ClassVar[str] = "inner"


@register
@dataclass(frozen=True)
class CodeMatcher(Matcher):
    """``code:`` searched in the source line printed under the innermost frame."""

    kind: ClassVar[str] = "code"


@register
@dataclass(frozen=True)
class LineMatcher(Matcher):
    """``line:`` makes the row a line rule: searched in every non-INFO log line."""

    kind: ClassVar[str] = "line"
    on_lines: ClassVar[bool] = True
    only_lines: ClassVar[bool] = True


@register
@dataclass(frozen=True)
class TextMatcher(Matcher):
    """``text:`` searched in exception messages and in every non-INFO log line."""

    kind: ClassVar[str] = "text"
    on_lines: ClassVar[bool] = True


@register
@dataclass(frozen=True)
class CondMatcher(Matcher):
    """``cond:`` a condition of the run: searched in log lines of every level (the first ones);
    holds for every failure of a log that has such a line."""

    kind: ClassVar[str] = "cond"


def make(kind: str, pattern: re.Pattern[str], negate: bool = False) -> Matcher:
    """The matcher for a ``kind:/RE/`` atom (KeyError: no such kind)."""
    return MATCHERS[kind](pattern, negate)


KINDS = tuple(MATCHERS)  # in the order the grammar documents them
