"""Step 2: where commands run.

A target copies the container scripts in, runs an argv list with variables set and unset
under a timeout (the whole process session dies at the end, its output streamed to a host log
file), and fetches result files back. `LocalTarget` runs subprocesses on this machine: for
Jupyter inside the GPU container, and for the demo. No shell strings anywhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence

KILL_GRACE_S = 10.0
# The scripts copied into every target (standard library + what vLLM brings).
SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "container_scripts"


@dataclass
class ExecResult:
    """How a command ended: exit code, whether the timeout fired, what had to be killed."""

    argv: list[str]
    exit_code: int | None
    timed_out: bool
    duration_s: float
    log_path: Path
    leftovers: list[int] = field(default_factory=list)


class Target(Protocol):
    kind: str

    def describe(self) -> dict: ...
    def python(self) -> str: ...
    def install_scripts(self, src: Path) -> str: ...
    def path_exists(self, path: str) -> bool: ...
    def work_path(self, name: str) -> str: ...
    def run(
        self,
        argv: Sequence[str],
        *,
        env_set: Mapping[str, str],
        env_unset: Sequence[str],
        timeout: float,
        log_path: Path,
    ) -> ExecResult: ...
    def fetch(self, path: str, dest: Path) -> bool: ...
    def cleanup(self) -> None: ...


def session_members(sid: int) -> list[int]:
    """Pids of every live process in session `sid` (read from /proc, no `ps` needed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after "(comm)": state ppid pgrp session ...; comm may contain spaces.
        rest = stat.rsplit(")", 1)[1].split()
        if int(rest[3]) == sid and rest[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_session(sid: int, grace: float = KILL_GRACE_S) -> list[int]:
    """TERM every process of the session, wait up to `grace`, KILL the rest.

    A session, not a process group: the serve script puts the server in a group of its own,
    and it must die with the phase all the same. Returns the pids that were still alive.
    """
    found = session_members(sid)
    for pid in found:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in session_members(sid):
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalTarget:
    """Runs on this machine, in a temporary work folder removed by `cleanup`."""

    kind = "local"

    def __init__(self, python: str | None = None, keep_files: bool = False) -> None:
        self._python = python or sys.executable
        self.keep_files = keep_files
        self.workdir = Path(tempfile.mkdtemp(prefix="modelverify-"))

    def describe(self) -> dict:
        return {"kind": self.kind, "python": self._python, "workdir": str(self.workdir)}

    def python(self) -> str:
        return self._python

    def install_scripts(self, src: Path) -> str:
        dest = self.workdir / "container_scripts"
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        return str(dest)

    def path_exists(self, path: str) -> bool:
        return Path(path).exists()

    def work_path(self, name: str) -> str:
        return str(self.workdir / name)

    def run(
        self,
        argv: Sequence[str],
        *,
        env_set: Mapping[str, str],
        env_unset: Sequence[str],
        timeout: float,
        log_path: Path,
    ) -> ExecResult:
        env = {k: v for k, v in os.environ.items() if k not in env_unset}
        env.update(env_set)
        env["PYTHONUNBUFFERED"] = "1"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        timed_out = False
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, cwd=self.workdir,
            )
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            # The leader may be gone while its workers live on: end the whole session.
            leftovers = kill_session(proc.pid)
            proc.wait()
        return ExecResult(
            argv=list(argv),
            exit_code=None if timed_out else proc.returncode,
            timed_out=timed_out,
            duration_s=round(time.monotonic() - start, 3),
            log_path=log_path,
            leftovers=leftovers,
        )

    def fetch(self, path: str, dest: Path) -> bool:
        src = Path(path)
        if not src.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return True

    def cleanup(self) -> None:
        if not self.keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)
