"""Secrets never reach a log, a result, the report or the notebook.

A secret is the value of an environment variable named HF_TOKEN, MODELSCOPE_API_TOKEN or
anything ending in _TOKEN, _KEY, _SECRET or _PASSWORD — on the host, in the variables we set,
and in the target container. Every byte we write (phase logs as they stream, fetched result
files, the report) goes through one `Redactor`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_NAME = re.compile(
    r"^(?:HF_TOKEN|MODELSCOPE_API_TOKEN|\w*_(?:TOKEN|KEY|SECRET|PASSWORD))$", re.IGNORECASE
)
MASK = "***"
MIN_SECRET_LEN = 4  # shorter values ("1", "no") would mask ordinary text everywhere


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.match(name))


def secret_values(envs: Iterable[Mapping[str, str]]) -> list[str]:
    found = {
        v
        for env in envs
        for k, v in env.items()
        if is_secret_name(k) and v and len(v) >= MIN_SECRET_LEN
    }
    return sorted(found, key=len, reverse=True)  # longest first: no partial leftovers


class Redactor:
    """Replaces every known secret value with ***."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = sorted(set(values), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self.values))) if self.values else None

    def add(self, values: Iterable[str]) -> None:
        self.__init__([*self.values, *values])  # type: ignore[misc]

    def text(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def data(self, value: Any) -> Any:
        """The same structure with every string redacted (keys too)."""
        if not self._pattern:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value
