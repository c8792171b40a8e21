"""Shared helpers of the container scripts (standard library only).

These scripts run inside someone else's container, so they may use only the standard library
and what vLLM itself brings. The scripts sit in one folder, so `import _common` works from any
of them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import traceback
from collections import deque
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_PROMPTS = HERE / "default_prompts.json"
TOP_LOGPROBS = 5

# A Python exception line at the start of a (prefix-stripped) log line: "pkg.Type: message".
_EXC_LINE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure))(?::\s?(.*))?$"
)
# vLLM prefixes such as "(EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700] ".
_PREFIX = re.compile(
    r"^(?:\x1b\[[0-9;]*m)*(?:\([\w.-]+ pid=\d+\)\s*)?"
    r"(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s?)?"
)


class PromptsFileError(ValueError):
    """The prompts_file parameter names a file that is not a usable prompt set."""


PROMPTS_SHAPE = '{"prompts": ["text", ...], "chat": [{"role": "user", "content": "..."}, ...]}'


def check_prompts(data: Any, name: str) -> dict[str, Any]:
    """Validate a parsed prompt set; one sentence naming the parameter and the file if wrong."""
    where = f"Parameter prompts_file: {name}"
    if not isinstance(data, dict):
        raise PromptsFileError(
            f"{where} holds a JSON {type(data).__name__}, not an object {PROMPTS_SHAPE}."
        )
    prompts, chat = data.get("prompts"), data.get("chat")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise PromptsFileError(
            f"{where}: 'prompts' must be a non-empty list of strings ({PROMPTS_SHAPE})."
        )
    if (
        not isinstance(chat, list)
        or not chat
        or not all(isinstance(m, dict) and "role" in m and "content" in m for m in chat)
    ):
        raise PromptsFileError(
            f"{where}: 'chat' must be a non-empty list of messages with 'role' and "
            f"'content' ({PROMPTS_SHAPE})."
        )
    return {"prompts": prompts, "chat": chat}


def load_prompts(path: str | None) -> dict[str, Any]:
    """The prompt set: `{"prompts": [str...], "chat": [message...]}`."""
    file = Path(path or DEFAULT_PROMPTS)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptsFileError(
            f"Parameter prompts_file: {file} cannot be read ({exc.strerror})."
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        msg = (
            f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else str(exc)
        )
        raise PromptsFileError(
            f"Parameter prompts_file: {file} is not valid JSON ({msg}); it must be {PROMPTS_SHAPE}."
        ) from None
    return check_prompts(data, str(file))


class VllmArgumentError(ValueError):
    """vLLM's own argument parser refused the engine arguments (extra_vllm_args)."""

    def __init__(self, extra: list[str], message: str) -> None:
        super().__init__(
            f"vLLM rejected the engine arguments of parameter extra_vllm_args "
            f"{json.dumps(extra)}: {message.strip()}"
        )


# argparse's own error line: "usage: …" then "PROG: error: MESSAGE"
_ARGPARSE_ERROR = re.compile(r"^(?:\S[^:]*): error: (?P<msg>.+)$")


def argparse_error(lines: Iterable[str]) -> str | None:
    """The last argparse `PROG: error: MESSAGE` line of a process's output (its MESSAGE)."""
    found = None
    for line in lines:
        m = _ARGPARSE_ERROR.match(strip_prefix(line).strip())
        if m:
            found = m.group("msg")
    return found


def parse_extra_args(text: str | None) -> list[str]:
    """`--extra-args` is a JSON list of strings (vLLM CLI engine arguments)."""
    if not text:
        return []
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            "--extra-args must be a JSON list of strings, e.g. '[\"--enforce-eager\"]'"
        )
    return value


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions by distribution name, from metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\n"))


def last_exception_line(lines: Iterable[str]) -> str | None:
    """The last Python exception line in a log: a first guess at the root cause.

    The host's classifier reads the whole log and replaces this with the real root cause;
    this guess only makes the result file useful on its own.
    """
    found: list[str] = []
    collecting = False
    for raw in lines:
        stripped = strip_prefix(raw)
        line = stripped.strip()
        if _EXC_LINE.match(line):
            found, collecting = [line], True
        elif collecting and stripped[:1].isspace() and line and len(found) < 3:
            # pydantic and others put the message on indented lines below the type line
            found.append(line)
        else:
            collecting = False
    return " ".join(found) or None


def root_exception(exc: BaseException) -> BaseException:
    """Follow `raise ... from` to the deepest cause.

    Implicit context ("during handling of …") is not followed: the exception that propagated
    is the failure, the one it replaced had been caught.
    """
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__
        if nxt is None:
            break
        exc = nxt
    return exc


def failure_fields(exc: BaseException, log_tail: Iterable[str] = ()) -> dict[str, Any]:
    """`error`, `error_type`, `traceback` for a failed phase.

    vLLM's wrappers ("Engine core initialization failed. See root cause above") carry no
    cause object; the root is then the last exception line of the child processes' output.
    """
    root = root_exception(exc)
    tail_line = last_exception_line(log_tail)
    error = f"{type(root).__name__}: {root}".strip()
    error_type = type(root).__name__
    if "root cause above" in str(root) and tail_line:
        error = tail_line
        error_type = tail_line.split(":", 1)[0].rsplit(".", 1)[-1]
    return {
        "error": error,
        "error_type": error_type,
        "traceback": "".join(traceback.format_exception(exc)),
    }


def new_result(phase: str, model: str, tp: int, packages: list[str]) -> dict[str, Any]:
    """The result shape both phases write: FAIL until the phase proves otherwise."""
    versions: dict[str, str | None] = {**package_versions(packages), "python": python_version()}
    return {
        "phase": phase,
        "status": "FAIL",
        "error": None,
        "error_type": None,
        "traceback": None,
        "timings": {},
        "outputs": [],
        "versions": versions,
        "model": model,
        "tp": tp,
    }


def evidence_dir(output: str | Path) -> Path:
    """Where the phase's processes record stack evidence: beside the result file."""
    return Path(output).with_suffix(".evidence")


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write the result atomically: a killed phase leaves no half-written JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, default=str)
    os.replace(tmp, path)


class Tail:
    """Bounded memory copy of the last lines printed, for the root cause and the report."""

    def __init__(self, maxlen: int = 200) -> None:
        self.lines: deque[str] = deque(maxlen=maxlen)

    def add(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))


def say(msg: str) -> None:
    """Progress line for the phase log (stdout is the log; the result goes to --output)."""
    print(f"[model-verify] {msg}", flush=True)


def exit_code(status: str) -> int:
    return 0 if status == "PASS" else 1


def python_version() -> str:
    return sys.version.split()[0]
