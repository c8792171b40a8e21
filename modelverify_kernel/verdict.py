"""Moved to `analysis.verdict`; this name stays only for callers not yet repointed (__main__.diff)."""

from .analysis.verdict import decide, precheck_failed, verdict, with_culprits  # noqa: F401
from .records import run_status  # noqa: F401
