"""Loads model-verify's stack evidence recorder into every Python process of a phase.

This folder is put first on PYTHONPATH by the phase scripts. A `sitecustomize` the image
already has is still run: the next one on sys.path is found and executed after ours.
"""

import os
import sys
from importlib.machinery import PathFinder
from importlib.util import module_from_spec

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_here))
try:
    import stack_dumps  # faulthandler: stacks on a crash, and on the timeout's dump signal

    stack_dumps.enable()
    import stack_evidence

    stack_evidence.install()
finally:
    sys.path.remove(os.path.dirname(_here))

_spec = PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here]
)
if _spec is not None and _spec.loader is not None:
    _module = module_from_spec(_spec)
    _spec.loader.exec_module(_module)
