"""Moved to `analysis.compare`; this name stays only for callers not yet repointed (__main__.diff)."""

from .analysis.compare import *  # noqa: F403
from .analysis.compare import Tolerances, compare_output, compare_phase, garbage_checks  # noqa: F401
