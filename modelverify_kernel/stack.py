"""Was the multi-chip stack really active in a run? Per component: active / inactive / unknown.

The evidence comes from inside the phase's processes (`container_scripts/stack_evidence.py`
records what each vLLM process loaded and enabled) and from the engine's own log lines —
never from the flags we set, since nothing in vLLM reads `USE_FLAGGEMS` and a missing plugin
is silently skipped (FACTS.md).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

COMPONENTS = ("FlagGems", "FlagTree", "FlagCX", "plugin")
_PLUGIN_ON = re.compile(r"Platform plugin (\S+) is activated")


@dataclass
class ComponentActivity:
    component: str
    status: str  # active | inactive | unknown | not_exercised
    evidence: list[str] = field(default_factory=list)


def _processes(events: list[dict], event: str, **match: Any) -> list[dict]:
    return [e for e in events if e.get("event") == event and all(e.get(k) == v for k, v in match.items())]


def _who(events: list[dict]) -> str:
    names = sorted({f"{e.get('process')} pid={e.get('pid')}" for e in events})
    return ", ".join(names[:6]) + (" …" if len(names) > 6 else "")


def _plugin(events: list[dict], log_lines: list[str]) -> ComponentActivity:
    a = ComponentActivity("plugin", "unknown")
    platform = [m.group(0) for line in log_lines if (m := _PLUGIN_ON.search(line)) and m.group(1) == "fl"]
    loaded = [e for e in _processes(events, "plugins_loaded") if "fl" in (e.get("names") or [])]
    if platform:
        a.status = "active"
        a.evidence.append(f"log: {platform[0]}")
    if loaded:
        a.status = "active"
        groups = sorted({e["group"] for e in loaded})
        a.evidence.append(f"plugin 'fl' loaded ({', '.join(groups)}) in {_who(loaded)}")
    if a.status == "unknown":
        tried = _processes(events, "plugins_loaded")
        if tried:
            a.status = "inactive"
            requested = sorted({e.get("vllm_plugins") or "unset" for e in tried})
            a.evidence.append(f"vLLM loaded plugins {sorted({n for e in tried for n in e.get('names') or []})} "
                              f"with VLLM_PLUGINS={', '.join(requested)}: no plugin named 'fl' ({_who(tried)})")
    return a


def _flaggems(events: list[dict]) -> ComponentActivity:
    a = ComponentActivity("FlagGems", "unknown")
    enabled = _processes(events, "flaggems_enabled")
    if enabled:
        ops = max((e.get("ops") or 0) for e in enabled)
        a.status = "active" if ops or any(e.get("ops") is None for e in enabled) else "inactive"
        a.evidence.append(f"flag_gems.{enabled[0].get('call')}() took over {ops} ATen ops in {_who(enabled)}")
        return a
    failed = [e for e in events if e.get("event") in ("flaggems_enable_failed", "import_failed")
              and (e.get("module") in (None, "flag_gems"))]
    if failed:
        a.status = "inactive"
        a.evidence.append(f"flag_gems failed in {_who(failed)}: {failed[0].get('error', '').strip()[:200]}")
    elif _processes(events, "flaggems_imported"):
        a.status = "inactive"
        a.evidence.append(f"flag_gems imported but never enabled ({_who(_processes(events, 'flaggems_imported'))})")
    elif _processes(events, "process_started"):
        a.status = "inactive"
        a.evidence.append("no process of the phase imported flag_gems")
    return a


def _flagtree(events: list[dict]) -> ComponentActivity:
    a = ComponentActivity("FlagTree", "unknown")
    imported = _processes(events, "triton_imported")
    flagtree = [e for e in imported if e.get("flagtree")]
    if flagtree:
        a.status = "active"
        a.evidence.append(f"triton from FlagTree {flagtree[0]['flagtree']} imported in {_who(flagtree)}")
    elif imported:
        a.status = "inactive"
        a.evidence.append(f"triton {imported[0].get('version')} imported is not FlagTree ({_who(imported)})")
    elif _processes(events, "process_started"):
        a.evidence.append("no process of the phase imported triton")
    return a


def _flagcx(events: list[dict], tp: int | None, flagcx_path: str | None) -> ComponentActivity:
    a = ComponentActivity("FlagCX", "unknown")
    dist = _processes(events, "dist_init")
    if tp == 1:
        a.status = "not_exercised"
        a.evidence.append("TP=1: no communication between devices, FlagCX was never exercised")
    backends = sorted({str(e.get("backend")) for e in dist})
    if any("flagcx" in b.lower() for b in backends):
        a.status = "active"
        a.evidence.append(f"distributed backend {backends} in {_who(dist)}")
    elif dist and a.status != "not_exercised":
        a.status = "inactive"
        a.evidence.append(f"distributed backend {backends}, not FlagCX ({_who(dist)})")
    if flagcx_path is None:
        a.evidence.append("FLAGCX_PATH unset in this run")
    return a


def assess(events: Iterable[dict], log_lines: Iterable[str], tp: int | None,
           flagcx_path: str | None) -> dict[str, ComponentActivity]:
    """What one phase shows of each component of the stack."""
    events, log_lines = list(events), list(log_lines)
    found = [_flaggems(events), _flagtree(events), _flagcx(events, tp, flagcx_path), _plugin(events, log_lines)]
    if not events:
        for a in found:
            if a.status != "not_exercised":
                a.status = "unknown"
            a.evidence.append("no evidence was recorded in this phase")
    return {a.component: a for a in found}


def merge(phases: Iterable[dict[str, ComponentActivity]]) -> dict[str, ComponentActivity]:
    """A run's view: active in any phase wins, then inactive, then the rest."""
    order = {"active": 0, "inactive": 1, "not_exercised": 2, "unknown": 3}
    out: dict[str, ComponentActivity] = {}
    for phase in phases:
        for name, a in phase.items():
            best = out.get(name)
            if best is None or order[a.status] < order[best.status]:
                out[name] = ComponentActivity(name, a.status, list(a.evidence))
            elif a.status == best.status:
                best.evidence += [e for e in a.evidence if e not in best.evidence]
    return out


def any_active(activity: dict[str, ComponentActivity]) -> bool:
    return any(a.status == "active" for a in activity.values())


def log_lines_matching(path: str | None, limit: int = 50) -> list[str]:
    """The log lines that speak of the stack (streamed; a log can be huge)."""
    if not path or not Path(path).is_file():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if _PLUGIN_ON.search(line) and len(out) < limit:
                out.append(line.rstrip("\n"))
    return out


def to_dict(activity: dict[str, ComponentActivity]) -> dict[str, Any]:
    return {name: asdict(a) for name, a in activity.items()}
