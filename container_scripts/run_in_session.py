#!/usr/bin/env python3
"""Run a command in a process session of its own, with a timeout that kills the whole session.

Every phase of both targets runs under this helper: on this machine and inside a Docker
container, where closing the exec stream does not stop anything, so the timeout must be
enforced in the target itself. The command starts in a new session (the serve script puts the
vLLM server in a process group of its own, so a group is not enough); on timeout, or when the
command ends and left processes behind, every process of the session gets SIGTERM, then SIGKILL
after --grace seconds. The command gets /dev/null as stdin; --unset NAME removes a variable from
its environment. Unless the caller set VLLM_RPC_BASE_PATH, the session gets a folder of its own
for vLLM's ZeroMQ socket files, removed when the session ends (a killed vLLM leaves them behind,
and they would pile up in the container's /tmp).

A timeout is judged before anything is killed. With --cap, a command whose output is still
coming when --timeout is reached (output in the last --window seconds: loading, compiling
kernels) keeps running while output continues, up to --cap seconds in all; only silence or the
cap end it. Before the kill, every process of the session that registered the stack-dump signal
(`stack_dumps.py`, loaded into each Python process of a phase) is sent it, one at a time: each
prints the stack of every thread into the output, so a hang shows where each process waited.

The controller (the notebook) may die with no code of its own running: SIGKILL, OOM killer.
With --watch-stdin our stdin is a pipe (a `docker exec` attached stdin, which dockerd closes
when the controller's connection goes) that the controller holds open and never writes to
unless it wants the session stopped: the line "stop" ends the session (an interrupted
notebook); end of file means the controller is gone: the session is killed, the --workdir
folder removed, and the helper exits. PR_SET_PDEATHSIG (SIGTERM when our parent dies) does the
same on this machine, but does not cross `docker exec`.

stdout carries only the command's output (its stderr is merged into it). Status lines for the
caller go to stderr, each a JSON object after the prefix below: first {"sid": N}, at the end
{"exit_code", "timed_out", "timeout_at", "ended_by", "ran_s", "idle_s", "dumped", "leftovers",
"remaining"}; `ended_by` is "exit", "timeout" (silent at the timeout, or no --cap), "silence"
(output stopped after the timeout), "cap", "stopped" (the controller asked) or "terminated"
(SIGTERM/SIGINT); when the controller is gone no status follows. Exit code: the command's,
124 on timeout, 127 when the command cannot start.

`--reap SID` kills whatever is left of a session and prints the pids it found as JSON (the
caller's check that nothing is left). Standard library only.

This file is also model-verify's one way to stop processes (`terminate`: SIGTERM, then SIGKILL
after KILL_GRACE_S): the serve script stops its server with it, and the package loads it for the
local target and for the batch's cells (`modelverify_kernel.resources.session_helper`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

STATUS_PREFIX = "MODELVERIFY-SESSION "
TIMEOUT_EXIT = 124
TIMED_OUT = ("timeout", "silence", "cap")
# Only a folder of ours is ever removed (the targets name their work folders so).
WORKDIR_PREFIX = "modelverify-"


# Seconds between SIGTERM and SIGKILL, wherever model-verify stops processes: a phase's session
# (timeout, leftovers, --reap), the serve script's server, the batch's cells. One value, so a
# process that needs time to shut down (vLLM freeing its devices) gets the same time everywhere.
KILL_GRACE_S = 10.0
# A kill of processes that kill with grace themselves (the batch stopping a cell, whose session
# helper stops vLLM): every process gets SIGTERM at once, and the inner kill must have ended (its
# grace, then KILLED_WAIT_S) before the outer one sends SIGKILL.
NESTED_KILL_GRACE_S = 2 * KILL_GRACE_S
# After SIGKILL, how long to wait for the processes to be gone (it only bounds the wait).
KILLED_WAIT_S = 5.0
# After the command ended, how long its output relay may take to pass on what is left.
RELAY_WAIT_S = 5.0


# The one implementation of killing with grace: this script runs standalone inside someone
# else's container, the serve script imports it, and the package loads this file
# (modelverify_kernel.resources.session_helper) for the local target and the batch.
def live_processes() -> dict[int, list[str]]:
    """Every live (non-zombie) process but ours: pid -> the fields of /proc/PID/stat after the
    command name (state ppid pgrp session ... starttime at index 19)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            table[int(entry.name)] = fields
    return table


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name; None when the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields


def session_members(sid: int) -> list[int]:
    """Pids of every live process in session `sid`."""
    return [pid for pid, fields in live_processes().items() if int(fields[3]) == sid]


def group_members(pgid: int) -> list[int]:
    """Pids of every live process in process group `pgid`."""
    return [pid for pid, fields in live_processes().items() if int(fields[2]) == pgid]


def child_pids(pid: int) -> list[int]:
    """Pids of the live children of process `pid` (the roots of `kill_trees` under it)."""
    return [child for child, fields in live_processes().items() if int(fields[1]) == pid]


def terminate(
    members: Callable[[], list[int]], grace: float = KILL_GRACE_S
) -> tuple[list[int], list[int]]:
    """TERM every process `members()` lists, KILL those still listed after `grace`.

    `members` is asked again while waiting: a process that ended (or is a zombie waiting for its
    parent) no longer counts, and the wait ends as soon as none is left. Returns the pids found
    first and the pids that had to be killed.
    """
    found = members()
    for pid in found:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while members() and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = members()
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILLED_WAIT_S
    while members() and time.monotonic() < deadline:
        time.sleep(0.05)
    return found, killed


def kill_session(sid: int, grace: float = KILL_GRACE_S) -> list[int]:
    """TERM every process of the session, KILL what is left after `grace`; returns the pids found."""
    return terminate(lambda: session_members(sid), grace)[0]


def kill_trees(roots: list[int], grace: float = NESTED_KILL_GRACE_S) -> list[int]:
    """TERM every process of the trees under `roots` (roots included), KILL what is left after
    `grace`; returns the pids found.

    The trees are read once, before the first signal: a child whose parent dies is re-parented
    and would drop out of a tree read later. A process is known by its pid and start time, so a
    pid reused meanwhile is never signalled. The default grace is the nested one: such trees
    (a batch's cells) hold session helpers that kill with grace themselves.
    """
    table = live_processes()
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = set(), [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    started = {pid: table[pid][19] for pid in tree}

    def members() -> list[int]:
        return [
            pid
            for pid, start in started.items()
            if (fields := _stat_fields(pid)) is not None and fields[19] == start
        ]

    return terminate(members, grace)[0]


def dump_signal() -> int:
    """The signal `stack_dumps.py` registers (kept equal to it; this script runs standalone)."""
    return int(signal.SIGWINCH)


def _catches(pid: int, sig: int) -> bool:
    """True when process `pid` has a handler for `sig` (SigCgt in /proc/PID/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def dump_stacks(sid: int, pause: float = 0.5, budget: float = 15.0) -> list[int]:
    """Have each process of session `sid` that can print its threads' stacks do so."""
    return dump_stacks_of(session_members(sid), pause, budget)


def dump_stacks_of(pids: list[int], pause: float = 0.5, budget: float = 15.0) -> list[int]:
    """Have each of `pids` that can print its threads' stacks do so, one at a time.

    Only processes with a handler for the dump signal get it (its default action would kill the
    others). One at a time, so the dumps of different processes do not interleave in the log.
    """
    sig = dump_signal()
    dumped = []
    deadline = time.monotonic() + budget
    for pid in sorted(pids):
        if time.monotonic() > deadline:
            break
        if _catches(pid, sig):
            sys.stdout.write(
                f"[model-verify] stacks of every thread of pid {pid} ({_cmdline(pid)}), "
                f"before the kill:\n"
            )
            sys.stdout.flush()
            _signal(pid, sig)
            dumped.append(pid)
            time.sleep(pause)
    return dumped


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)[:200]


def progress_window(timeout: float) -> float:
    """Output this recent at the timeout means the command was still working, not hung.

    vLLM is silent for long stretches while healthy (importing vllm: 8 s here, more on a busy
    host; an engine process starting; weights loading): never less than 30 s, a tenth of the
    timeout up to a minute.
    """
    return max(30.0, min(60.0, 0.1 * timeout))


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def die_with_parent() -> None:
    """Get SIGTERM when our parent dies (Linux): a killed notebook takes its phase with it."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def status(**fields: object) -> None:
    sys.stderr.write(STATUS_PREFIX + json.dumps(fields) + "\n")
    sys.stderr.flush()


class Controller:
    """Why the session must end early, if it must: the controller asked, died, or a signal came."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.wake = threading.Event()
        self.gone = threading.Event()  # end of file on stdin: nobody is listening any more
        self.parent = os.getppid()

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.wake.set()

    def watch_stdin(self) -> None:
        """In a thread: "stop" ends the session; end of file means the controller is gone."""

        def watch() -> None:
            # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader holds its
            # lock, and Python aborts at exit ("Fatal Python error: _enter_buffered_busy")
            pending = b""
            while chunk := os.read(0, 4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if any(line.strip() == b"stop" for line in lines):
                    self.stop("stopped")
            self.gone.set()
            self.stop("controller gone")

        threading.Thread(target=watch, daemon=True).start()

    def is_gone(self) -> bool:
        """End of file on stdin, or (on this machine) our parent died and we were re-parented."""
        return self.gone.is_set() or os.getppid() != self.parent


def remove_workdir(path: str | None) -> None:
    if path and Path(path).name.startswith(WORKDIR_PREFIX):
        shutil.rmtree(path, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds before the session is killed"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=KILL_GRACE_S,
        help=f"seconds between SIGTERM and SIGKILL (default {KILL_GRACE_S:g})",
    )
    p.add_argument(
        "--cap",
        type=float,
        default=None,
        help="hard cap in seconds: past --timeout, keep going while output still comes, up to this",
    )
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="output this many seconds old still counts as progress (default: timeout/10, 5..60)",
    )
    p.add_argument(
        "--unset",
        action="append",
        default=[],
        metavar="NAME",
        help="remove NAME from the command's environment (repeatable)",
    )
    p.add_argument(
        "--watch-stdin",
        action="store_true",
        help='stdin is the controller\'s pipe: a "stop" line ends the session, end of file '
        "means the controller is gone (kill the session, remove --workdir, exit)",
    )
    p.add_argument(
        "--workdir",
        default=None,
        help=f"the run's work folder (named {WORKDIR_PREFIX}*), removed when the controller is gone",
    )
    p.add_argument(
        "--reap", type=int, default=None, metavar="SID", help="kill what is left of session SID"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- argv to run")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if args.reap is None and not args.command:
        p.error("give a command after --, or --reap SID")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reap is not None:
        print(json.dumps(kill_session(args.reap, args.grace)))
        return 0
    controller = Controller()
    env = {k: v for k, v in os.environ.items() if k not in args.unset}
    ipc_dir = None
    if "VLLM_RPC_BASE_PATH" not in env:
        # vLLM's ZeroMQ socket files go to the temp folder and stay there when a process is
        # killed: give the session its own folder, removed when it ends
        ipc_dir = tempfile.mkdtemp(prefix="mv-ipc-")
        env["VLLM_RPC_BASE_PATH"] = ipc_dir
    try:
        return _supervise(args, controller, env, ipc_dir)
    finally:
        if ipc_dir:
            shutil.rmtree(ipc_dir, ignore_errors=True)


class Relay:
    """The command's output copied to ours as it comes, noting when it last came."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.start = self.last_output = time.monotonic()
        self.thread = threading.Thread(target=self._copy, daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        out = sys.stdout.buffer
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            self.last_output = time.monotonic()
            out.write(chunk)
            out.flush()


def _wait(args: argparse.Namespace, controller: Controller, relay: Relay) -> str:
    """Wait for the command to end; how it ended (`ended_by`), the timeout judged on progress."""
    window = (
        args.window
        if args.window is not None
        else (progress_window(args.timeout) if args.timeout else 5.0)
    )
    extended = False
    while relay.proc.poll() is None:
        if controller.reason:
            return controller.reason
        now = time.monotonic()
        if args.timeout is not None and now - relay.start >= args.timeout:
            if args.cap is None or now - relay.last_output > window:
                return "silence" if extended else "timeout"
            if now - relay.start >= args.cap:
                return "cap"
            extended = True  # still making progress: keep going
        controller.wake.wait(0.2)
    return "exit"


def _supervise(
    args: argparse.Namespace, controller: Controller, env: dict[str, str], ipc_dir: str | None
) -> int:
    """Run the command in its own session until it ends or the timeout; report its status."""
    try:
        proc = subprocess.Popen(
            args.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        status(error=f"cannot start {args.command[0]}: {exc}")
        return 127
    status(sid=proc.pid)
    relay = Relay(proc)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: controller.stop("terminated"))
    die_with_parent()
    if args.watch_stdin:
        controller.watch_stdin()
    ended_by = _wait(args, controller, relay)
    timed_out = ended_by in TIMED_OUT
    timeout_at = time.time() if timed_out else None  # the caller compares it with its own clock
    ran_s = round(time.monotonic() - relay.start, 3)
    idle_s = round(time.monotonic() - relay.last_output, 3)
    dumped = dump_stacks(proc.pid) if timed_out else []
    if dumped:
        time.sleep(1.0)  # let the last dump reach the output
    # The leader may be gone while its workers live on: end the whole session.
    leftovers = kill_session(proc.pid, args.grace)
    if controller.is_gone():
        # Nobody reads our output or status any more (a write could block forever): clean up, go.
        remove_workdir(args.workdir)
        if ipc_dir:
            shutil.rmtree(ipc_dir, ignore_errors=True)
        os._exit(128 + signal.SIGTERM)
    code = proc.wait()
    relay.thread.join(RELAY_WAIT_S)
    status(
        exit_code=None if timed_out else code,
        timed_out=timed_out,
        timeout_at=timeout_at,
        ended_by=ended_by,
        ran_s=ran_s,
        idle_s=idle_s if timed_out else None,
        dumped=dumped,
        leftovers=leftovers,
        remaining=session_members(proc.pid),
    )
    if timed_out:
        return TIMEOUT_EXIT
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
