"""Environment semantics of the stand-in plugin (read at call time, never cached).

- `use_flaggems()`: False when `VLLM_FL_PREFER_ENABLED` is false (0/false/no/off) or
  `VLLM_FL_PREFER` names a backend other than `flagos`; else `USE_FLAGGEMS`, default TRUE when
  unset or empty (0/false/no/off turn it off) — the real 2026 plugin's rule.
- `whitelist()` / `blacklist()`: `VLLM_FL_FLAGOS_WHITELIST` / `VLLM_FL_FLAGOS_BLACKLIST`, comma
  lists of FlagGems op (function) names.
- `oplist_path()`: `FLAGGEMS_ENABLE_OPLIST_PATH` (None → flag_gems' default
  ~/.flaggems/oplist.log).
- `mode()`: `FAKE_FL_MODE`, default `flaggems` (see the package docstring).
"""

from __future__ import annotations

import os

OFF = ("0", "false", "no", "off")
PLATFORM_MODES = ("real", "default-on", "inert", "direct-dispatch")


def mode() -> str:
    return os.environ.get("FAKE_FL_MODE", "flaggems")


def _off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in OFF


def use_flaggems() -> bool:
    if _off("VLLM_FL_PREFER_ENABLED"):
        return False
    prefer = os.environ.get("VLLM_FL_PREFER", "").strip().lower()
    if prefer and prefer != "flagos":
        return False
    return not _off("USE_FLAGGEMS")


def _list(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def whitelist() -> list[str]:
    return _list("VLLM_FL_FLAGOS_WHITELIST")


def blacklist() -> list[str]:
    return _list("VLLM_FL_FLAGOS_BLACKLIST")


def oplist_path() -> str | None:
    return os.environ.get("FLAGGEMS_ENABLE_OPLIST_PATH") or None


def dispatch_to_flagos(op: str) -> bool:
    """Whether the plugin's own op dispatch sends `op` to FlagGems right now.

    `default-on` (2025-12 plugin): always. `real` / `direct-dispatch`: when `use_flaggems()`, and
    the op lists allow it (a whitelist must name it; a blacklist must not) — the stand-in applies
    the same per-op lists to its own dispatch so an op can be bisected. Other modes: never.
    """
    m = mode()
    if m == "default-on":
        return True
    if m not in ("real", "direct-dispatch") or not use_flaggems():
        return False
    wl = whitelist()
    if wl:
        return op in wl
    return op not in blacklist()
