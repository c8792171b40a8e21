"""TEST-ONLY lying-log stand-in: NO plugin at all, only the log lines a working stack prints.

Put this folder on PYTHONPATH: in every Python process (phase script, engine core, workers,
server) it prints, in vLLM's log format,
    INFO MM-DD HH:MM:SS [__init__.py:282] Platform plugin fl is activated
    INFO MM-DD HH:MM:SS [worker.py:105] FlagGems enabled: 433 ops
and does nothing else: no plugin, no flag_gems, no op overridden, numerics untouched. A verdict
that believes log lines says the stack was active; the evidence recorded inside the engine
processes says it was not. It is a plain `sitecustomize` module (model-verify's own
sitecustomize, first on PYTHONPATH, runs the next one found on the path — this one).
"""

import sys
import time


def _lie() -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    for where, message in (
        ("__init__.py:282", "Platform plugin fl is activated"),
        ("worker.py:105", "FlagGems enabled: 433 ops"),
    ):
        print(f"INFO {stamp} [{where}] {message}", file=sys.stdout, flush=True)


_lie()
