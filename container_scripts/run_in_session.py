#!/usr/bin/env python3
"""Run a command in a process session of its own, with a timeout that kills the whole session.

Used inside a Docker container, where closing the exec stream does not stop anything: the
timeout must be enforced in the container itself. The command starts in a new session (the
serve script puts the vLLM server in a process group of its own, so a group is not enough);
on timeout, or when the command ends and left processes behind, every process of the session
gets SIGTERM, then SIGKILL after --grace seconds.

stdout carries only the command's output (its stderr is merged into it). Status lines for the
caller go to stderr, each a JSON object after the prefix below: first {"sid": N}, at the end
{"exit_code", "timed_out", "leftovers", "remaining"}. Exit code: the command's, 124 on
timeout, 127 when the command cannot start.

`--reap SID` kills whatever is left of a session and prints the pids it found as JSON (the
caller's check that nothing is left). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STATUS_PREFIX = "MODELVERIFY-SESSION "
TIMEOUT_EXIT = 124


# The one implementation of the session kill: this script runs standalone inside someone
# else's container, and modelverify_kernel.target loads these functions for the local target.
def session_members(sid: int) -> list[int]:
    """Pids of every live (non-zombie) process in session `sid`, read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if int(rest[3]) == sid and rest[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_session(sid: int, grace: float) -> list[int]:
    """TERM every process of the session, KILL what is left after `grace`; returns the pids found."""
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=None, help="seconds before the session is killed")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    p.add_argument("--reap", type=int, default=None, metavar="SID", help="kill what is left of session SID")
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
    try:
        proc = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as exc:
        status(error=f"cannot start {args.command[0]}: {exc}")
        return 127
    status(sid=proc.pid)

    def stop(signum: int, _frame: object) -> None:
        # Told to stop ourselves: take the whole session down first.
        kill_session(proc.pid, args.grace)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    die_with_parent()
    timed_out = False
    timeout_at = None
    try:
        proc.wait(args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        timeout_at = time.time()  # the caller compares it with when output last came
    # The leader may be gone while its workers live on: end the whole session.
    leftovers = kill_session(proc.pid, args.grace)
    code = proc.wait()
    remaining = session_members(proc.pid)
    status(exit_code=None if timed_out else code, timed_out=timed_out, timeout_at=timeout_at,
           leftovers=leftovers, remaining=remaining)
    if timed_out:
        return TIMEOUT_EXIT
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
