"""Moved to `analysis.gate`; this name stays only for callers not yet repointed (__main__.diff)."""

from .analysis.gate import (  # noqa: F401
    ComponentActivity,
    assess,
    claims_in_log,
    engine_environment,
    env_text,
    gate,
    merge,
    to_dict,
)
