"""What the multi-chip stack really did in each run, and the gate BOTH_PASS must pass.

The evidence comes from inside the phase's processes (`container_scripts/stack_evidence.py`
records plugin loads, FlagGems ops taken over and kernels that ran, the plugin's own op dispatch,
Triton's owner, distributed backends and collectives) — never from the flags we set, and never
from a printed log line alone: a log line may support recorded evidence, never replace it.

Per run and component the status is active / inactive / not_exercised / unknown, with the
strength of the evidence: *strong* (FlagOS code did work: FlagGems kernels ran, the plugin's own
ops ran, FlagCX collectives at TP>1), *weak* (set up to work: FlagGems ops taken over, a FlagCX
backend initialised) or *none* (a plugin loaded, FlagTree installed: proves nothing). The gate is
differential: Run B must show work that Run A did not, and Run A itself must be base.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..records import Gate
from .logformat import strip_ansi

FL_PLUGIN = "fl"
STRENGTHS = ("strong", "weak", "none")
# Lines that claim stack activity; support only, never evidence on their own.
_CLAIM = re.compile(r"Platform plugin (\S+) is activated|flag_?gems\W.*\benabled?\b", re.IGNORECASE)


@dataclass
class ComponentActivity:
    component: str
    status: str  # active | inactive | unknown | not_exercised
    evidence: list[str] = field(default_factory=list)
    strength: str = "none"  # strong | weak | none
    work: list[str] = field(
        default_factory=list
    )  # what it did, comparable between runs ("ran:embedding")
    counts_for_gate: bool = True
    loaded: bool = (
        False  # in this run's processes at all (plugin loaded, FlagTree's triton imported)
    )


def _of(events: list[dict], *names: str) -> list[dict]:
    return [e for e in events if e.get("event") in names]


def _who(events: list[dict]) -> str:
    names = sorted({f"{e.get('process')} pid={e.get('pid')}" for e in events})
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _calls(events: list[dict]) -> dict[str, int]:
    """Largest call count recorded per op (counts are written at 1, 10, 100, …: a lower bound)."""
    out: dict[str, int] = {}
    for e in events:
        op = str(e.get("op"))
        out[op] = max(out.get(op, 0), int(e.get("calls") or 1))
    return out


def _ops_text(calls: Mapping[str, int], limit: int = 12) -> str:
    ranked = sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(
        f"{op} (≥{n} calls)" if n > 1 else f"{op} (1 call)" for op, n in ranked[:limit]
    )
    return text + (f" and {len(ranked) - limit} more" if len(ranked) > limit else "")


def _fl_roots(events: list[dict]) -> set[str]:
    """Top-level packages of the plugin named 'fl' (vllm_fl for the real one)."""
    roots = set()
    for e in _of(events, "plugins_loaded"):
        module = (e.get("modules") or {}).get(FL_PLUGIN)
        if module:
            roots.add(str(module).split(".")[0])
    return roots


def _flaggems(events: list[dict], claims: list[str]) -> ComponentActivity:
    a = ComponentActivity("FlagGems", "unknown")
    ran = _of(events, "flaggems_op_ran")
    enabled = [e for e in _of(events, "flaggems_enabled") if e.get("ops")]
    registered = _of(events, "flaggems_registered")
    if ran:
        calls = _calls(ran)
        a.status, a.strength = "active", "strong"
        direct = sorted(
            {f"{e.get('op')} from {e.get('caller')}" for e in ran if e.get("via") == "direct"}
        )
        a.evidence.append(
            f"FlagGems kernels ran: {_ops_text(calls)} in {_who(ran)}"
            + (f"; called directly: {', '.join(direct[:6])}" if direct else "")
        )
        a.work += [f"ran:{op}" for op in calls]
    if enabled or registered:
        ops = max(
            [int(e.get("ops") or 0) for e in enabled]
            + [len({o for e in registered for o in e.get("ops") or []})]
        )
        call = enabled[0].get("call") if enabled else "torch.library registration"
        a.evidence.append(
            f"flag_gems {call} took over {ops} ATen ops in {_who(enabled or registered)}"
            + ("" if ran else "; no FlagGems kernel was seen running, so this is weaker evidence")
        )
        a.work.append("taken_over")
        if a.status != "active":
            a.status, a.strength = "active", "weak"
    if a.status == "active":
        a.evidence += [f"log (supporting): {c}" for c in claims[:1]]
        return a
    failed = [
        e
        for e in _of(events, "flaggems_enable_failed", "import_failed")
        if e.get("module") in (None, "flag_gems")
    ]
    if failed:
        a.status = "inactive"
        a.evidence.append(
            f"flag_gems failed in {_who(failed)}: {str(failed[0].get('error', '')).strip()[:200]}"
        )
    elif _of(events, "flaggems_imported"):
        a.status = "inactive"
        a.evidence.append(
            f"flag_gems imported but it took over no op and no kernel of it ran "
            f"({_who(_of(events, 'flaggems_imported'))})"
        )
    elif _of(events, "process_started"):
        a.status = "inactive"
        a.evidence.append("no process of the phase imported flag_gems")
    a.evidence += [
        f"log claims {c!r}, but no process recorded it: a printed line is not evidence"
        for c in claims[:1]
    ]
    return a


def _plugin_loaded(events: list[dict], loaded: list[dict], active: bool) -> str:
    """The sentence for a plugin 'fl' that loaded: where, as what, and that loading is not work."""
    groups = sorted({str(e["group"]).rsplit(".", 1)[-1] for e in loaded})
    platforms = sorted(
        {
            str(e.get("platform"))
            for e in _of(events, "platform_plugin_answered")
            if e.get("name") == FL_PLUGIN and e.get("platform")
        }
    )
    return (
        f"plugin 'fl' loaded ({', '.join(groups)}"
        + (f"; platform {', '.join(platforms)}" if platforms else "")
        + f") in {_who(loaded)}"
        + ("" if active else ", but none of its own ops ran: loading alone is not activity")
    )


def _plugin(events: list[dict], claims: list[str]) -> ComponentActivity:
    a = ComponentActivity("plugin", "unknown")
    roots = _fl_roots(events)
    loaded = [e for e in _of(events, "plugins_loaded") if FL_PLUGIN in (e.get("names") or [])]
    owned = lambda name: str(name).split(".")[0] in roots  # noqa: E731
    op_ran = [e for e in _of(events, "plugin_op_ran") if owned(e.get("cls"))]
    dispatched = [
        e
        for e in _of(events, "flaggems_op_ran")
        if e.get("via") == "direct" and owned(e.get("caller"))
    ]
    if op_ran or dispatched:
        a.status, a.strength = "active", "strong"
        if op_ran:
            calls = _calls(op_ran)
            a.evidence.append(f"the plugin's own ops ran: {_ops_text(calls)} in {_who(op_ran)}")
            a.work += [f"op:{op}" for op in calls]
        if dispatched:
            calls = _calls(dispatched)
            a.evidence.append(
                f"the plugin dispatched FlagGems kernels directly: {_ops_text(calls)}"
            )
            a.work += [f"dispatch:{op}" for op in calls]
    if loaded:
        a.loaded = True
        a.evidence.append(_plugin_loaded(events, loaded, a.status == "active"))
    if a.status == "active":
        a.evidence += [f"log (supporting): {c}" for c in claims[:1]]
        return a
    tried = _of(events, "plugins_loaded")
    if loaded:
        a.status = "inactive"
    elif tried:
        a.status = "inactive"
        requested = sorted({_env_text(e.get("vllm_plugins")) for e in tried})
        names = sorted({n for e in tried for n in e.get("names") or []})
        a.evidence.append(
            f"vLLM loaded plugins {names} with VLLM_PLUGINS={', '.join(requested)}: "
            f"no plugin named 'fl' ({_who(tried)})"
        )
    a.evidence += [
        f"log claims {c!r}, but no process recorded it: a printed line is not evidence"
        for c in claims[:1]
        if not loaded
    ]
    return a


def _flagtree(events: list[dict]) -> ComponentActivity:
    a = ComponentActivity("FlagTree", "unknown", counts_for_gate=False)
    imported = _of(events, "triton_imported")
    flagtree = [e for e in imported if e.get("flagtree")]
    if flagtree:
        a.status, a.loaded = "active", True
        a.evidence.append(
            f"triton imported in {_who(flagtree)} is FlagTree {flagtree[0]['flagtree']} "
            "(the flagtree distribution owns the triton package): it is the same in both runs, "
            "so it never counts for the gate"
        )
    elif imported:
        a.status = "inactive"
        a.evidence.append(
            f"triton {imported[0].get('version')} imported is not FlagTree ({_who(imported)})"
        )
    elif _of(events, "process_started"):
        a.status = "inactive"
        a.evidence.append("no process of the phase imported triton")
    return a


def _flagcx(
    events: list[dict], tp: int | None, flagcx_path: str | None, flagcx_library: str | None
) -> ComponentActivity:
    a = ComponentActivity("FlagCX", "unknown")
    dist = _of(events, "dist_init")
    is_flagcx = lambda e: "flagcx" in str(e.get("backend")).lower()  # noqa: E731
    backends = sorted({str(e.get("backend")) for e in dist})
    if not tp or tp <= 1:
        a.status = "not_exercised"
        a.evidence.append(
            f"TP={tp or 1}: no communication between devices, FlagCX was never exercised"
            + (f" (backend {backends} initialised)" if any(map(is_flagcx, dist)) else "")
        )
        return a
    if flagcx_path is None:
        a.status = "inactive"
        a.evidence.append(
            "FLAGCX_PATH unset in this run" + (f"; distributed backend {backends}" if dist else "")
        )
        return a
    if flagcx_library is None:
        a.status = "inactive"
        a.evidence.append(
            f"FLAGCX_PATH={flagcx_path} does not hold build/lib/libflagcx.so: the plugin's FlagCX "
            "communicator turns itself off silently"
        )
        return a
    collectives = [
        e for e in _of(events, "collective") if is_flagcx(e) and (e.get("world_size") or 2) > 1
    ]
    libs = [e for e in _of(events, "flagcx_library") if e.get("loaded")]
    inits = [e for e in dist if is_flagcx(e) and (e.get("world_size") or 0) > 1]
    if collectives:
        a.status, a.strength = "active", "strong"
        ops = sorted({str(e.get("op")) for e in collectives})
        a.evidence.append(
            f"collectives on the FlagCX backend: {', '.join(ops)} in {_who(collectives)}"
        )
        a.work += [f"collective:{op}" for op in ops]
    if inits:  # set up to communicate: FlagCX in Run A, but not FlagCX work in Run B
        if a.status != "active":
            a.status, a.strength = "active", "weak"
        a.evidence.append(
            f"distributed backend {backends} initialised at world size "
            f"{max(int(e.get('world_size') or 0) for e in inits)} in {_who(inits)}"
            + ("" if collectives else "; no collective was seen on it (not enough for the gate)")
        )
    if libs:  # FlagCX's torch plugin may load it in any run: supporting only
        a.evidence.append(
            f"libflagcx loaded from {libs[0].get('path')} in {_who(libs)} (supporting only)"
        )
    if a.status == "unknown" and dist:
        a.status = "inactive"
        a.evidence.append(f"distributed backend {backends}, not FlagCX ({_who(dist)})")
    return a


def claims_in_log(path: str | None, limit: int = 5) -> list[str]:
    """Log lines that claim stack activity (streamed; a log can be huge)."""
    if not path or not Path(path).is_file():
        return []
    out: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = _CLAIM.search(line)
            if m:  # the claim itself, without vLLM's prefix and colour codes
                out.append(strip_ansi(line[m.start() :]).strip()[:160])
                if len(out) >= limit:
                    break
    return out


def assess(
    events: Iterable[dict],
    claims: Iterable[str],
    tp: int | None,
    flagcx_path: str | None,
    flagcx_library: str | None = None,
) -> dict[str, ComponentActivity]:
    """What one phase shows of each component of the stack."""
    events, claims = list(events), list(claims)
    plugin_claims = [c for c in claims if "Platform plugin" in c]
    gems_claims = [c for c in claims if "Platform plugin" not in c]
    found = [
        _flaggems(events, gems_claims),
        _flagtree(events),
        _flagcx(events, tp, flagcx_path, flagcx_library),
        _plugin(events, plugin_claims),
    ]
    if not events:
        for a in found:
            if a.status != "not_exercised":
                a.status, a.strength = "unknown", "none"
            a.evidence.append("no evidence was recorded in this phase")
    return {a.component: a for a in found}


def merge(phases: Mapping[str, Mapping[str, ComponentActivity]]) -> dict[str, ComponentActivity]:
    """A run's view over its phases: the strongest activity wins, evidence (marked with its
    phase) and work add up."""
    order = {"active": 0, "inactive": 1, "not_exercised": 2, "unknown": 3}
    out: dict[str, ComponentActivity] = {}
    for phase_name, phase in phases.items():
        for name, a in phase.items():
            a = ComponentActivity(
                name,
                a.status,
                [f"{phase_name}: {e}" for e in a.evidence],
                a.strength,
                list(a.work),
                a.counts_for_gate,
                a.loaded,
            )
            best = out.get(name)
            if best is None:
                out[name] = a
                continue
            best.loaded = best.loaded or a.loaded
            if (order[a.status], STRENGTHS.index(a.strength)) < (
                order[best.status],
                STRENGTHS.index(best.strength),
            ):
                best.status, best.strength = a.status, a.strength
            best.evidence += [e for e in a.evidence if e not in best.evidence]
            best.work += [w for w in a.work if w not in best.work]
    return out


def gate(
    run_a: Mapping[str, ComponentActivity] | None, run_b: Mapping[str, ComponentActivity] | None
) -> Gate:
    """BOTH_PASS needs FlagOS work in Run B that Run A did not do; Run A must show none of FlagGems/FlagCX."""
    run_a, run_b = run_a or {}, run_b or {}
    not_base = [
        f"{name} active in Run A: {a.evidence[0]}"
        for name, a in run_a.items()
        if name in ("FlagGems", "FlagCX") and a.status == "active" and a.evidence
    ]

    evidence, strengths = [], []
    for name, b in run_b.items():
        if not b.counts_for_gate or b.status != "active":
            continue
        done_in_a = (
            set(run_a[name].work) if name in run_a and run_a[name].status == "active" else set()
        )
        new = [w for w in b.work if w not in done_in_a]
        if new:
            evidence.append(f"{name} ({b.strength}): {b.evidence[0]}")
            strengths.append(b.strength)
    strength = min(strengths, key=STRENGTHS.index) if strengths else "none"
    unproven = None
    if run_a.get("FlagGems", ComponentActivity("FlagGems", "unknown")).status == "unknown":
        unproven = (
            "Run A's processes recorded no evidence (the recorder did not load: is PYTHONPATH reset, or "
            "Python run with -I/-S?), so Run A cannot be shown to be base"
        )
    return Gate(
        bool(evidence) and not not_base and unproven is None, strength, evidence, not_base, unproven
    )


def engine_environment(events: Iterable[dict]) -> dict[str, Any]:
    """Every stack variable the run's processes saw: one value, or the list of differing values."""
    seen: dict[str, list[Any]] = {}
    for e in events:
        if e.get("event") == "process_started" and isinstance(e.get("env"), dict):
            for k, v in e["env"].items():
                values = seen.setdefault(k, [])
                if v not in values:
                    values.append(v)
    return {k: (v[0] if len(v) == 1 else v) for k, v in sorted(seen.items())}


def _env_text(value: Any) -> str:
    if value is None:
        return "unset"
    return '""' if value == "" else str(value)


def env_text(value: Any) -> str:
    """How a stack variable's value reads: unset (None) and empty ("") told apart."""
    if isinstance(value, list):
        return " / ".join(_env_text(v) for v in value)
    return _env_text(value)


def to_dict(activity: Mapping[str, ComponentActivity]) -> dict[str, Any]:
    return {name: asdict(a) for name, a in activity.items()}
