"""Every thread's Python stack on demand, in every process of a phase (standard library only).

`enable()` turns on `faulthandler` for fatal signals (a SIGSEGV leaves the Python stack of every
thread in the log) and registers DUMP_SIGNAL: on it, the process prints the stack of each of its
threads to stderr and carries on. The evidence `sitecustomize` calls it in every Python process a
phase starts (vLLM's engine core, workers, the API server); the phase scripts call it for
themselves. `run_in_session.py` sends DUMP_SIGNAL to each process of the session, one at a time,
before it kills the session at a timeout — so a hang shows the frame every process waited in.

Native libraries may install their own SIGSEGV handler when they load (seen: `tvm_ffi`, which
vLLM's API server imports, prints only a C stack): faulthandler is armed again after such a
library is imported (theirs is replaced: the Python stack is what attributes the crash).
"""

from __future__ import annotations

import faulthandler
import signal
import sys

# Libraries that install a fatal-signal handler of their own when they load.
_REARM_AFTER = ("torch", "tvm_ffi", "flashinfer", "ray")
_armed_after: set[str] = set()
_dlopen_pending = [False]


def dump_signal() -> int:
    """SIGWINCH: nothing in vLLM uses it (SIGUSR1/2 are taken by some libraries), no terminal
    sends it to a phase (its session has none), and its default action is to ignore it — so a
    process caught without our handler (one being exec'd as it is signalled) is not killed, as
    it would be by a real-time signal."""
    return int(signal.SIGWINCH)


def _arm() -> None:
    try:
        # enable() does nothing while enabled: disable first, so our handler is installed again
        # on top of the library's (which is then replaced: the Python stack matters more)
        faulthandler.disable()
        faulthandler.enable(all_threads=True)
        faulthandler.register(dump_signal(), all_threads=True, chain=False)
    except (AttributeError, RuntimeError, ValueError, OSError):  # no stderr, no such signal: skip
        pass


def _on_audit(event: str, args: tuple) -> None:
    if event == "ctypes.dlopen":  # a native library is being loaded: re-arm once it is in
        _dlopen_pending[0] = True
        return
    if event not in ("import", "ctypes.dlsym", "ctypes.dlsym/handle"):
        return
    rearm = _dlopen_pending[0]
    _dlopen_pending[0] = False
    if event == "import" and len(_armed_after) < len(_REARM_AFTER):
        for name in _REARM_AFTER:
            mod = sys.modules.get(name)
            spec = getattr(mod, "__spec__", None)
            if (
                name not in _armed_after
                and mod is not None
                and not getattr(spec, "_initializing", False)
            ):
                _armed_after.add(name)  # its import has finished: its handler (if any) is in place
                rearm = True
    if rearm:
        _arm()


def enable() -> None:
    _arm()
    if not getattr(sys, "_modelverify_stack_dumps", False):
        sys._modelverify_stack_dumps = True  # type: ignore[attr-defined]
        sys.addaudithook(_on_audit)
