"""Every thread's Python stack on demand, in every process of a phase (standard library only).

`enable()` turns on `faulthandler` for fatal signals (a SIGSEGV leaves the Python stack of every
thread in the log) and registers DUMP_SIGNAL: on it, the process prints the stack of each of its
threads to stderr and carries on. The evidence `sitecustomize` calls it in every Python process a
phase starts (vLLM's engine core, workers, the API server); the phase scripts call it for
themselves. `run_in_session.py` sends DUMP_SIGNAL to each process of the session, one at a time,
before it kills the session at a timeout — so a hang shows the frame every process waited in.
"""

from __future__ import annotations

import faulthandler
import signal


def dump_signal() -> int:
    """A real-time signal nothing in vLLM uses (SIGUSR1/2 are taken by some libraries)."""
    return int(signal.SIGRTMIN) + 5


def enable() -> None:
    try:
        if not faulthandler.is_enabled():
            faulthandler.enable(all_threads=True)
        faulthandler.register(dump_signal(), all_threads=True, chain=False)
    except (AttributeError, RuntimeError, ValueError, OSError):  # no stderr, no such signal: skip
        pass
