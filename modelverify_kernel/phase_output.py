"""What a phase session printed and how it ended (step 2, the target, writes both).

`LogStream` writes the output into the host log as it arrives, secrets masked, and keeps the
last lines with their arrival time; `ExecResult` is the end of the command as the runner judges
it (exit, timeout, silence, what had to be killed).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .redact import Redactor


@dataclass
class ExecResult:
    """How a command ended: exit code, whether the timeout fired, what had to be killed."""

    argv: list[str]
    exit_code: int | None
    timed_out: bool
    duration_s: float
    log_path: Path
    leftovers: list[int] = field(default_factory=list)
    idle_s: float | None = None  # on timeout: seconds since the last output line
    last_line: str | None = None  # on timeout: the last line printed before it fired
    # exit | timeout | silence (after progress past the timeout) | cap | terminated
    ended_by: str | None = None
    ran_s: float | None = None  # how long the command ran before it ended or was stopped
    dumped: list[int] = field(default_factory=list)  # pids that printed their threads' stacks
    start_error: str | None = None  # why the target's python (or the command) could not start


class LogStream:
    """Writes a phase's output into its host log as it arrives, secrets masked.

    Keeps the last lines with their arrival time, so a timeout can be told apart: output
    still coming (slow start, JIT compiling) or silence (a hang).
    """

    def __init__(self, log: BinaryIO, redactor: Redactor, keep: int = 200) -> None:
        self.log, self.redactor = log, redactor
        self.lines: deque[tuple[float, str]] = deque(maxlen=keep)
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        line = self.redactor.text(raw.decode("utf-8", errors="replace"))
        self.log.write(line.encode("utf-8") + b"\n")
        self.log.flush()
        self.lines.append((time.time(), line))

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def note(self, text: str) -> None:
        self._line(f"[model-verify] {text}".encode())

    def before(self, moment: float | None) -> tuple[float | None, str | None]:
        """Seconds of silence before `moment` and the last line printed until then."""
        if moment is None:
            return None, None
        earlier = [(t, line) for t, line in self.lines if t <= moment]
        if not earlier:
            return None, None
        t, line = earlier[-1]
        return round(moment - t, 3), line

    def result(
        self,
        argv: Sequence[str],
        status: Mapping[str, Any],
        code: int | None,
        start: float,
        log_path: Path,
        leftovers: list[int],
    ) -> ExecResult:
        timed_out = bool(status.get("timed_out"))
        idle, last = self.before(status.get("timeout_at")) if timed_out else (None, None)
        if timed_out and isinstance(status.get("idle_s"), (int, float)):
            idle = status["idle_s"]  # the helper saw the output arrive: its clock is exact
        return ExecResult(
            argv=list(argv),
            exit_code=None if timed_out else status.get("exit_code", code),
            timed_out=timed_out,
            duration_s=round(time.monotonic() - start, 3),
            log_path=log_path,
            leftovers=leftovers,
            idle_s=idle,
            last_line=last,
            ended_by=status.get("ended_by"),
            ran_s=status.get("ran_s"),
            dumped=list(status.get("dumped") or []),
            start_error=status.get("start_error"),
        )
