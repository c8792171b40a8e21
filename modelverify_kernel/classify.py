"""Compatibility names for the log classifier, which now lives in ``modelverify_kernel.analysis``.

For this step of the redesign only: import from ``analysis.diagnose`` (classify_log, Diagnosis),
``analysis.knowledge`` (load_rules, Rule, RuleError), ``analysis.logformat`` (strip_ansi) and
``analysis.cli`` (cli_classify) instead.
"""

from __future__ import annotations

from .analysis.cli import cli_classify
from .analysis.diagnose import Diagnosis, classify_log
from .analysis.knowledge import Rule, RuleError, load_rules
from .analysis.logformat import strip_ansi
from .vocabulary import COMPONENT_LAYER
from .vocabulary import MULTICHIP as _MULTICHIP

MULTICHIP = frozenset(_MULTICHIP)

__all__ = [
    "COMPONENT_LAYER",
    "MULTICHIP",
    "Diagnosis",
    "Rule",
    "RuleError",
    "classify_log",
    "cli_classify",
    "load_rules",
    "strip_ansi",
]
