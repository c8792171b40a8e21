"""Errors the user can fix: one sentence, shown without a traceback.

IPython renders an exception through its `_render_traceback_` method when it has one, so in
the notebook (and in papermill's error) the reader sees the sentence, not our stack frames.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what, where and what to do."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ParameterError(UserError, ValueError):
    """A notebook parameter is missing or invalid."""
